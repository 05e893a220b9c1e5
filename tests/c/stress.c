/*
 * stress.c -- many threads sharing one handle per directory, from C.
 *
 * Usage: stress CONFIG THREADS ROUNDS
 *
 * CONFIG defines [directory.imap] (for passwords) and [directory.lmtp] (for recipients),
 * e.g. against the real Dovecot of tests/servers/servers.sh; users as in
 * tests/servers/README.md. Each of THREADS threads runs ROUNDS rounds of: a right password, a
 * recipient that exists, one that does not, a local and a foreign domain, and bad input;
 * every result and the thread's last error are checked (empty after OK, set after anything
 * else, never the password). Exit 0 when every answer was right.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remote_directory.h"

static directory *imap, *lmtp;
static int rounds;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void check(int thread, const char *what, directory_result got, directory_result want)
{
    const char *msg = directory_last_error();
    int bad = got != want || (got == DIRECTORY_RESULT_OK) != (msg[0] == '\0') ||
              strstr(msg, "alice-pass-1") != NULL;

    if (bad) {
        pthread_mutex_lock(&lock);
        failures++;
        printf("FAIL thread %d %s: %s, want %s (last error: %s)\n", thread, what,
               directory_result_name(got), directory_result_name(want), msg);
        pthread_mutex_unlock(&lock);
    }
}

static void *worker(void *arg)
{
    int t = (int)(long)arg;
    int r;

    for (r = 0; r < rounds; r++) {
        if ((r + t) % 2 == 0)
            check(t, "auth alice", directory_auth(imap, "alice@example.org", "alice-pass-1"),
                  DIRECTORY_RESULT_OK);
        check(t, "rcpt alice", directory_rcpt(lmtp, "alice@example.org"), DIRECTORY_RESULT_OK);
        check(t, "rcpt nosuchuser", directory_rcpt(lmtp, "nosuchuser@example.org"),
              DIRECTORY_RESULT_REJECTED);
        check(t, "domain example.org", directory_is_local_domain(imap, "Example.ORG"),
              DIRECTORY_RESULT_OK);
        check(t, "domain other.test", directory_is_local_domain(lmtp, "other.test"),
              DIRECTORY_RESULT_REJECTED);
        check(t, "rcpt on imap", directory_rcpt(imap, "alice@example.org"),
              DIRECTORY_RESULT_UNSUPPORTED);
        check(t, "injection", directory_rcpt(lmtp, "alice@example.org\r\nDATA"),
              DIRECTORY_RESULT_INVALID_INPUT);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t *threads;
    int n, i;

    if (argc != 4) {
        fprintf(stderr, "usage: %s CONFIG THREADS ROUNDS\n", argv[0]);
        return 2;
    }
    n = atoi(argv[2]);
    rounds = atoi(argv[3]);
    if (directory_open(argv[1], "imap", &imap) != DIRECTORY_RESULT_OK ||
        directory_open(argv[1], "lmtp", &lmtp) != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "open %s: %s\n", argv[1], directory_last_error());
        return 2;
    }
    threads = calloc((size_t)n, sizeof *threads);
    if (threads == NULL)
        return 2;
    for (i = 0; i < n; i++)
        if (pthread_create(&threads[i], NULL, worker, (void *)(long)i) != 0) {
            perror("pthread_create");
            return 2;
        }
    for (i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    directory_close(imap);
    directory_close(lmtp);
    free(threads);
    printf("stress: %d threads x %d rounds, %d failed\n", n, rounds, failures);
    return failures == 0 ? 0 : 1;
}
