/*
 * tenant.c - the tenant of a request, by the configured policy.
 *
 * In:  struct reqtrack_opts (kind, header name, hash key) and what one
 *      request showed (struct tenant_input).
 * Out: a tenant name for struct tt_request; the hash key file.
 *
 * Policies: default (X-Tenant-Id header, then JSON user, else "-"), a named
 * header, the JSON user, the API key, the client address. An API key is
 * never kept: the Bearer token is hashed with HMAC-SHA256 under a secret
 * key of this host, so the same key gives the same tenant across runs but
 * the name cannot be turned back into the key, nor guessed without the
 * host's key file. Tenant names are cut to TT_NAME_MAX - 1 bytes and
 * control characters are replaced, so they print safely.
 *
 * Assumes: OpenSSL 3 (HMAC one-shot) and getrandom(2).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tenant.h"

static void set_name(char *out, const char *s)
{
	size_t i;

	for (i = 0; s[i] && i < TT_NAME_MAX - 1; i++) {
		unsigned char c = s[i];

		out[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
				 ? '_' : (char)c;
	}
	out[i] = '\0';
	if (!out[0])
		strcpy(out, "-");
}

int tenant_hash_api_key(const uint8_t key[32], const char *auth, char *out,
			size_t cap)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mlen = 0;
	const char *tok = auth;

	if (!auth || cap < 21)
		return -EINVAL;
	if (!strncasecmp(tok, "Bearer ", 7))
		tok += 7;
	while (*tok == ' ')
		tok++;
	if (!*tok)
		return -EINVAL;
	if (!HMAC(EVP_sha256(), key, 32, (const unsigned char *)tok,
		  strlen(tok), mac, &mlen) || mlen < 8)
		return -EIO;
	memcpy(out, "key:", 4);
	for (int i = 0; i < 8; i++)
		snprintf(out + 4 + 2 * i, 3, "%02x", mac[i]);
	explicit_bzero(mac, sizeof(mac));
	return 0;
}

static void client_addr(const struct tt_conn_meta *c, char *out)
{
	char buf[INET6_ADDRSTRLEN] = "";

	if (c && c->family == AF_INET)
		inet_ntop(AF_INET, c->remote_addr, buf, sizeof(buf));
	else if (c && c->family == AF_INET6)
		inet_ntop(AF_INET6, c->remote_addr, buf, sizeof(buf));
	set_name(out, buf);
}

void tenant_resolve(const struct reqtrack_opts *o,
		    const struct tenant_input *in, char *out)
{
	switch (o->tenant_kind) {
	case TT_TENANT_HEADER:
		set_name(out, in->header ? in->header : "");
		break;
	case TT_TENANT_USER:
		set_name(out, in->user ? in->user : "");
		break;
	case TT_TENANT_API_KEY:
		if (tenant_hash_api_key(o->hash_key, in->auth, out,
					TT_NAME_MAX) < 0)
			strcpy(out, "-");
		break;
	case TT_TENANT_CLIENT_ADDR:
		client_addr(in->conn, out);
		break;
	default:
		if (in->header && *in->header)
			set_name(out, in->header);
		else
			set_name(out, in->user ? in->user : "");
		break;
	}
}

static int read_key(const char *path, uint8_t key[32])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, key, 32);
	close(fd);
	if (n != 32) {
		fprintf(stderr,
			"tokentrace: hash key file %s is not 32 bytes: remove it to make a new one\n",
			path);
		return -EINVAL;
	}
	return 0;
}

/* mkdir -p of path's parent, mode 0700 for what it creates. */
static int make_parent(const char *path)
{
	char dir[PATH_MAX];

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	for (char *s = dir + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return -errno;
		*s = '/';
	}
	return 0;
}

static int create_key(const char *path, uint8_t key[32])
{
	int fd, err = make_parent(path);

	if (err < 0)
		return err;
	if (getrandom(key, 32, 0) != 32)
		return -EIO;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, key, 32) != 32) {
		err = -EIO;
		unlink(path);
	}
	close(fd);
	return err;
}

int tenant_load_hash_key(const char *path, uint8_t key[32])
{
	int err;

	if (!path)
		path = TENANT_KEY_PATH;
	err = read_key(path, key);
	if (err != -ENOENT)
		return err;
	err = create_key(path, key);
	if (err == -EEXIST)	/* made by someone else meanwhile */
		err = read_key(path, key);
	if (err < 0)
		fprintf(stderr,
			"tokentrace: cannot create hash key file %s: %s (run as root, or choose another path)\n",
			path, strerror(-err));
	return err;
}

int tenant_parse_spec(const char *spec, struct reqtrack_opts *o)
{
	if (!spec)
		return -EINVAL;
	if (!strncmp(spec, "header:", 7) && spec[7] &&
	    strlen(spec + 7) < sizeof(o->tenant_header)) {
		o->tenant_kind = TT_TENANT_HEADER;
		strcpy(o->tenant_header, spec + 7);
		return 0;
	}
	if (!strcmp(spec, "user"))
		o->tenant_kind = TT_TENANT_USER;
	else if (!strcmp(spec, "api-key"))
		o->tenant_kind = TT_TENANT_API_KEY;
	else if (!strcmp(spec, "client-addr"))
		o->tenant_kind = TT_TENANT_CLIENT_ADDR;
	else if (!strcmp(spec, "default"))
		o->tenant_kind = TT_TENANT_DEFAULT;
	else {
		fprintf(stderr,
			"tokentrace: bad --tenant-key '%s': use header:NAME, user, api-key or client-addr\n",
			spec);
		return -EINVAL;
	}
	return 0;
}
