/*
 * tenant.h - who a request belongs to.
 *
 * In:  the tenant policy (struct reqtrack_opts), what the request showed
 *      (the tenant header's value, the Authorization value, the JSON
 *      "user"), and the connection's addresses.
 * Out: a short printable tenant name; API keys only as "key:" + the first
 *      16 hex digits of HMAC-SHA256(hash_key, key).
 *
 * Assumes: the caller wipes the Authorization value after the call.
 */
#ifndef TT_TENANT_H
#define TT_TENANT_H

#include <stddef.h>
#include <stdint.h>

#include "requests.h"

#define TENANT_KEY_PATH	"/var/lib/tokentrace/hash.key"

struct tenant_input {
	const char *header;	/* the tenant header's value, or NULL */
	const char *auth;	/* the Authorization header, or NULL */
	const char *user;	/* the JSON "user", or NULL */
	const struct tt_conn_meta *conn;
};

/* Fills out (TT_NAME_MAX bytes) with the tenant, "-" when unknown. */
void tenant_resolve(const struct reqtrack_opts *o,
		    const struct tenant_input *in, char *out);

/* "key:" + 16 hex digits of HMAC-SHA256(key, the Bearer token). */
int tenant_hash_api_key(const uint8_t key[32], const char *auth, char *out,
			size_t cap);

/* Read the 32-byte key at path, or create it (0600, parent 0700). */
int tenant_load_hash_key(const char *path, uint8_t key[32]);

/* Parse --tenant-key: header:NAME | user | api-key | client-addr. */
int tenant_parse_spec(const char *spec, struct reqtrack_opts *o);

#endif
