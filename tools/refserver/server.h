/*
 * server.h - the network thread: an epoll loop over a listening socket,
 * its HTTP/1.1 (optionally TLS) connections, the engine's eventfd and a
 * signalfd for SIGINT/SIGTERM.
 *
 * In:  struct rs_server_cfg; a started struct rs_engine.
 * Out: OpenAI-compatible responses on the sockets; messages to the
 *      engine (new requests, responses written, clients gone).
 * Assumes: the caller blocked SIGINT and SIGTERM in every thread before
 *      starting the engine (rs_server_block_signals), so they arrive here.
 */
#ifndef RS_SERVER_H
#define RS_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

struct rs_server_cfg {
	const char *host;
	int port;		/* 0: any free port */
	const char *port_file;	/* written once listening; may be NULL */
	bool chunked;		/* streams: Transfer-Encoding: chunked */
	size_t max_body;
	const char *tls_cert, *tls_key;	/* both or neither */
	const char *model_name;
	int ctx;		/* max_tokens cap, prompt + max_tokens limit */
	int default_max_tokens;
	bool report_cached;	/* usage.prompt_tokens_details.cached_tokens */
};

int rs_server_block_signals(void);
/* Serves until SIGINT or SIGTERM; 0, or -errno with a message printed. */
int rs_server_run(const struct rs_server_cfg *cfg, struct rs_engine *e);

#endif
