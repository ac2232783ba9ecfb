/*
 * conn.c - blocking TCP and TLS connections with a deadline.
 *
 * In:  host, port and TLS choice from lg_opts; bytes to write; a deadline
 *      (CLOCK_MONOTONIC ns) for each read or write.
 * Out: a connected lg_conn; bytes read; errors that name the host, the
 *      port and what failed.
 * Assumes: one thread per connection, so blocking I/O is fine; every wait
 *      goes through poll() with the time left to the deadline, so a silent
 *      server cannot hold a worker past --timeout. TLS is OpenSSL; with
 *      --insecure the peer certificate is not checked, otherwise it is
 *      checked against the system store and the host name.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "loadgen.h"

struct lg_tls {
	SSL_CTX *ctx;
	bool insecure;
};

int64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void ssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[160];

	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s: %s", what, e ? buf : "no OpenSSL detail");
	ERR_clear_error();
}

struct lg_tls *lg_tls_new(bool insecure, char *err, size_t errlen)
{
	struct lg_tls *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "out of memory for the TLS context");
		return NULL;
	}
	t->insecure = insecure;
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx) {
		ssl_err(err, errlen, "cannot create the TLS context");
		free(t);
		return NULL;
	}
	if (insecure) {
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
	} else {
		SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
		if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
			ssl_err(err, errlen, "cannot load the system CA store "
				"(use --insecure to skip verification)");
			lg_tls_free(t);
			return NULL;
		}
	}
	return t;
}

void lg_tls_free(struct lg_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* Time left to the deadline in ms for poll(), -1 for none, 0 when past. */
static int ms_left(int64_t deadline_ns)
{
	int64_t left;

	if (!deadline_ns)
		return -1;
	left = deadline_ns - lg_now_ns();
	if (left <= 0)
		return 0;
	return left / 1000000 > 1000000 ? 1000000 : (int)(left / 1000000) + 1;
}

/* Waits until fd is ready for events; 0 ready, -1 timed out or failed. */
static int wait_fd(int fd, short events, int64_t deadline_ns, char *err,
		   size_t errlen)
{
	struct pollfd p = { .fd = fd, .events = events };
	int rc;

	do {
		rc = poll(&p, 1, ms_left(deadline_ns));
	} while (rc < 0 && errno == EINTR);
	if (rc > 0)
		return 0;
	snprintf(err, errlen, rc == 0 ? "timed out (--timeout)" : "poll: %s",
		 strerror(errno));
	return -1;
}

static int tcp_connect(const struct lg_opts *o, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int fd = -1, rc, one = 1;

	rc = getaddrinfo(o->host, o->port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot resolve %s:%s: %s", o->host,
			 o->port, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		rc = errno;
		close(fd);
		fd = -1;
		errno = rc;
	}
	if (fd < 0)
		snprintf(err, errlen, "cannot connect to %s:%s: %s (is the "
			 "server running?)", o->host, o->port, strerror(errno));
	else
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	freeaddrinfo(res);
	return fd;
}

static int tls_start(struct lg_conn *c, const struct lg_opts *o,
		     struct lg_tls *tls, char *err, size_t errlen)
{
	SSL *ssl = SSL_new(tls->ctx);

	if (!ssl) {
		ssl_err(err, errlen, "SSL_new");
		return -1;
	}
	c->ssl = ssl;
	SSL_set_fd(ssl, c->fd);
	SSL_set_tlsext_host_name(ssl, o->host);
	if (!tls->insecure)
		SSL_set1_host(ssl, o->host);
	if (SSL_connect(ssl) != 1) {
		char what[400];

		snprintf(what, sizeof(what), "TLS handshake with %s:%s failed"
			 "%s", o->host, o->port, tls->insecure ? "" :
			 " (self-signed server? try --insecure)");
		ssl_err(err, errlen, what);
		return -1;
	}
	return 0;
}

int lg_conn_open(struct lg_conn *c, const struct lg_opts *o,
		 struct lg_tls *tls, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = (time_t)o->timeout_s,
			      .tv_usec = (long)((o->timeout_s -
					(double)(time_t)o->timeout_s) * 1e6) };

	memset(c, 0, sizeof(*c));
	c->fd = tcp_connect(o, err, errlen);
	if (c->fd < 0)
		return -1;
	/* a backstop for TLS reads that block inside OpenSSL */
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (o->tls && tls_start(c, o, tls, err, errlen) < 0) {
		lg_conn_close(c);
		return -1;
	}
	return 0;
}

void lg_conn_close(struct lg_conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->uses = 0;
}

long lg_conn_write_all(struct lg_conn *c, const char *p, size_t n,
		       int64_t deadline_ns, char *err, size_t errlen)
{
	size_t done = 0;

	while (done < n) {
		long w;

		if (wait_fd(c->fd, POLLOUT, deadline_ns, err, errlen) < 0)
			return -1;
		if (c->ssl) {
			w = SSL_write(c->ssl, p + done, (int)(n - done));
			if (w <= 0) {
				ssl_err(err, errlen, "TLS write failed");
				return -1;
			}
		} else {
			w = send(c->fd, p + done, n - done, MSG_NOSIGNAL);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				snprintf(err, errlen, "write: %s",
					 strerror(errno));
				return -1;
			}
		}
		done += (size_t)w;
	}
	return (long)done;
}

static long tls_read(struct lg_conn *c, char *p, size_t n, char *err,
		     size_t errlen)
{
	int r = SSL_read(c->ssl, p, (int)n);
	int e;

	if (r > 0)
		return r;
	e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
		ERR_clear_error();
		return 0;
	}
	/* a peer that closes without close_notify: treat as end of stream */
	if (e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) ==
	    SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		ERR_clear_error();
		return 0;
	}
	ssl_err(err, errlen, "TLS read failed");
	return -1;
}

long lg_conn_read(struct lg_conn *c, char *p, size_t n, int64_t deadline_ns,
		  char *err, size_t errlen)
{
	long r;

	for (;;) {
		if (!(c->ssl && SSL_pending(c->ssl) > 0) &&
		    wait_fd(c->fd, POLLIN, deadline_ns, err, errlen) < 0)
			return -1;
		if (c->ssl) {
			errno = 0;
			return tls_read(c, p, n, err, errlen);
		}
		r = recv(c->fd, p, n, 0);
		if (r >= 0)
			return r;
		if (errno == EINTR || errno == EAGAIN)
			continue;
		snprintf(err, errlen, "read: %s", strerror(errno));
		return -1;
	}
}
