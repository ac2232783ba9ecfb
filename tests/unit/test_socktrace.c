/*
 * test_socktrace.c - the parts of socket tracing that need no kernel:
 * finding the listener of a port in /proc/net/tcp{,6} text, target lists,
 * ring buffer sizing, and the record layout shared with the BPF program.
 *
 * In:  user/target.c, user/socktrace.c, include/tokentrace/sock.h.
 * Out: Criterion suite "socktrace".
 * Assumes: nothing but a writable /tmp.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "tokentrace/sock.h"
#include "../../user/socktrace.h"
#include "../../user/target.h"

static char st_dir[64];

static void st_write(const char *name, const char *text)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", st_dir, name);
	f = fopen(p, "w");
	cr_assert(f);
	fputs(text, f);
	fclose(f);
}

static void st_setup(void)
{
	snprintf(st_dir, sizeof(st_dir), "/tmp/tt-socktrace-XXXXXX");
	cr_assert(mkdtemp(st_dir));
}

static void st_teardown(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/tcp", st_dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/tcp6", st_dir);
	unlink(p);
	rmdir(st_dir);
}

TestSuite(socktrace, .init = st_setup, .fini = st_teardown);

#define TCP_HEAD "  sl  local_address rem_address   st tx_queue rx_queue tr " \
	"tm->when retrnsmt   uid  timeout inode\n"

Test(socktrace, listener_found_in_tcp_and_tcp6_and_others_ignored)
{
	unsigned long ino[8];
	int n;

	/* port 8000 = 0x1F40: listening on v4 and v6; an established
	 * connection from port 8000 and a listener on 8001 must not match */
	st_write("tcp", TCP_HEAD
		 "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 "
		 "00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0\n"
		 "   1: 0100007F:1F40 0100007F:D431 01 00000000:00000000 "
		 "00:00000000 00000000     0        0 5555 1 0 20 4 30 10 -1\n"
		 "   2: 0100007F:1F41 00000000:0000 0A 00000000:00000000 "
		 "00:00000000 00000000     0        0 6666 1 0 100 0 0 10 0\n");
	st_write("tcp6", TCP_HEAD
		 "   0: 00000000000000000000000000000000:1F40 "
		 "00000000000000000000000000000000:0000 0A 00000000:00000000 "
		 "00:00000000 00000000     0        0 7777 1 0 100 0 0 10 0\n");
	n = target_listen_inodes(st_dir, 8000, ino, 8);
	cr_assert_eq(n, 2);
	cr_expect_eq(ino[0], 4242);
	cr_expect_eq(ino[1], 7777);
	cr_expect_eq(target_listen_inodes(st_dir, 8002, ino, 8), 0);
}

Test(socktrace, listener_search_stops_at_max)
{
	unsigned long ino[1];

	st_write("tcp", TCP_HEAD
		 "   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 "
		 "00:00000000 00000000     0        0 11 1 0 100 0 0 10 0\n"
		 "   1: 00000000:1F40 00000000:0000 0A 00000000:00000000 "
		 "00:00000000 00000000     0        0 12 1 0 100 0 0 10 0\n");
	cr_expect_eq(target_listen_inodes(st_dir, 8000, ino, 1), 1);
	cr_expect_eq(ino[0], 11);
}

Test(socktrace, target_list_adds_each_pid_once)
{
	struct target_list *tl = calloc(1, sizeof(*tl));

	cr_assert_eq(target_push(tl, 10), 1);
	cr_assert_eq(target_push(tl, 11), 1);
	cr_assert_eq(target_push(tl, 10), 0);
	cr_expect_eq(tl->n, 2);
	free(tl);
}

Test(socktrace, missing_pid_is_not_found)
{
	struct target_list *tl = calloc(1, sizeof(*tl));

	cr_expect_eq(target_add_pid(tl, 0x3fffffff), -ESRCH);
	cr_expect_eq(target_add_pid(tl, getpid()), 1);
	cr_expect_eq(tl->n, 1);
	cr_expect_eq(tl->pids[0], getpid());
	free(tl);
}

Test(socktrace, missing_comm_is_not_found)
{
	struct target_list *tl = calloc(1, sizeof(*tl));

	cr_expect_eq(target_add_comm(tl, "no-such-comm-xyz"), -ESRCH);
	cr_expect_eq(tl->n, 0);
	free(tl);
}

Test(socktrace, ring_buffer_rounds_up_to_power_of_two_pages)
{
	unsigned page = getpagesize();

	cr_expect_eq(socktrace_ringbuf_bytes(1), page);
	cr_expect_eq(socktrace_ringbuf_bytes(4096), 4096u * 1024);
	cr_expect_eq(socktrace_ringbuf_bytes(3000), 4096u * 1024);
	cr_expect_eq(socktrace_ringbuf_bytes(0), 4096u * 1024);
}

Test(socktrace, record_layout_is_fixed)
{
	/* the BPF program is compiled with the same header by clang; these
	 * offsets are the contract both sides rely on */
	cr_expect_eq(sizeof(struct tt_sock_hdr), 40);
	cr_expect_eq(offsetof(struct tt_sock_hdr, size), 4);
	cr_expect_eq(offsetof(struct tt_sock_hdr, ts_ns), 8);
	cr_expect_eq(offsetof(struct tt_sock_hdr, conn_id), 16);
	cr_expect_eq(sizeof(struct tt_sock_open), 40);
	cr_expect_eq(sizeof(struct tt_sock_data), 24);
	cr_expect_eq(TT_SOCK_CAP_MAX % TT_SOCK_CHUNK_MAX, 0);
}
