/*
 * hostile.c -- hostile input through the C API, as a C caller would pass it.
 *
 * Opens an IMAP, an SMTP and an LMTP directory pointing at a listening socket of its own
 * (127.0.0.1, a port the kernel picks) that it never accepts on, calls every function with
 * NULL, bytes that are not UTF-8, CR/LF injection, control characters and over-long values,
 * and checks that each call is INVALID_INPUT with a message that does not repeat the
 * secret, that *out is untouched on failure, that directory_close(NULL) is a no-op, and at
 * the end that not one connection reached the socket.
 *
 * Usage: hostile          (exit 0 when every check held; one line per failed check)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "remote_directory.h"

#define SECRET "c-hostile-secret-value"

static int checks, failures;

static void expect(const char *what, directory_result got, directory_result want)
{
    const char *msg = directory_last_error();

    checks++;
    if (got != want) {
        failures++;
        printf("FAIL %s: %s instead of %s (%s)\n", what, directory_result_name(got),
               directory_result_name(want), msg);
        return;
    }
    if (got != DIRECTORY_RESULT_OK && msg[0] == '\0') {
        failures++;
        printf("FAIL %s: empty last error\n", what);
    }
    if (strstr(msg, SECRET) != NULL || strstr(msg, "aaaaaaaa") != NULL) {
        failures++;
        printf("FAIL %s: the message repeats the value: %s\n", what, msg);
    }
}

/* A string of n bytes of c, NUL-terminated. */
static char *filled(size_t n, char c)
{
    char *s = malloc(n + 1);

    if (s == NULL) {
        perror("malloc");
        exit(2);
    }
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

int main(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    const char *types[] = {"imap", "smtp", "lmtp"};
    directory *dirs[3];
    char config[512];
    char *long_user = filled(DIRECTORY_MAX_USER + 1, 'a');
    char *long_secret = filled(DIRECTORY_MAX_SECRET + 1, 's');
    char *long_address = filled(DIRECTORY_MAX_ADDRESS + 1, 'a');
    char *long_domain = filled(DIRECTORY_MAX_DOMAIN + 1, 'd');
    char *huge = filled(1 << 20, 'a');
    /* Not UTF-8, CR/LF injection, controls: refused in every text argument. */
    const char *bad[] = {
        "",
        "alice\xff@example.org",
        "a\xc0\xaf@example.org",
        "a\xed\xa0\x80@example.org",
        "ren\xe9@example.org",
        "alice@example.org\r\nRCPT TO:<root@example.org>",
        "alice\r\na9 LOGOUT",
        "alice@example.org\n",
        "alice@example.org\r",
        "al\x1bice@example.org",
        "al\x7fice@example.org",
        "al\tice@example.org",
    };
    const char *bad_secrets[] = {
        "",
        SECRET "\xff",
        SECRET "\r\na9 LOGOUT",
        SECRET "\n",
    };
    size_t i, d;
    int accepted;

    if (listener < 0) {
        perror("socket");
        return 2;
    }
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 16) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0) {
        perror("listen");
        return 2;
    }
    fcntl(listener, F_SETFL, O_NONBLOCK);

    for (d = 0; d < 3; d++) {
        directory *out = (directory *)0x5a5a;

        snprintf(config, sizeof config,
                 "[directory.t]\ntype = \"%s\"\naddress = \"127.0.0.1\"\nport = %d\n"
                 "timeout = \"2s\"\nlookup.domains = [\"example.org\"]\n",
                 types[d], ntohs(addr.sin_port));
        /* NULL out, NULL config: INVALID_INPUT, *out untouched. */
        expect("open_str(config, NULL, NULL)", directory_open_str(config, NULL, NULL),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("open_str(NULL, NULL, &out)", directory_open_str(NULL, NULL, &out),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("open(NULL, NULL, &out)", directory_open(NULL, NULL, &out),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("open_str(config, \"\\xff\", &out)", directory_open_str(config, "\xff", &out),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("open_str(config, \"nope\", &out)", directory_open_str(config, "nope", &out),
               DIRECTORY_RESULT_CONFIG);
        checks++;
        if (out != (directory *)0x5a5a) {
            failures++;
            printf("FAIL *out written by a failed open\n");
        }
        dirs[d] = NULL;
        expect("open_str", directory_open_str(config, NULL, &dirs[d]), DIRECTORY_RESULT_OK);
        if (dirs[d] == NULL)
            return 1;
    }

    for (d = 0; d < 3; d++) {
        directory *dir = dirs[d];

        expect("auth(NULL dir)", directory_auth(NULL, "alice@example.org", SECRET),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(NULL dir)", directory_rcpt(NULL, "alice@example.org"),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("is_local_domain(NULL dir)", directory_is_local_domain(NULL, "example.org"),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("auth(dir, NULL, secret)", directory_auth(dir, NULL, SECRET),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("auth(dir, user, NULL)", directory_auth(dir, "alice@example.org", NULL),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(dir, NULL)", directory_rcpt(dir, NULL), DIRECTORY_RESULT_INVALID_INPUT);
        expect("is_local_domain(dir, NULL)", directory_is_local_domain(dir, NULL),
               DIRECTORY_RESULT_INVALID_INPUT);
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            expect("auth(bad user)", directory_auth(dir, bad[i], SECRET),
                   DIRECTORY_RESULT_INVALID_INPUT);
            expect("rcpt(bad address)", directory_rcpt(dir, bad[i]),
                   DIRECTORY_RESULT_INVALID_INPUT);
            expect("is_local_domain(bad domain)", directory_is_local_domain(dir, bad[i]),
                   DIRECTORY_RESULT_INVALID_INPUT);
        }
        for (i = 0; i < sizeof bad_secrets / sizeof bad_secrets[0]; i++)
            expect("auth(bad secret)", directory_auth(dir, "alice@example.org", bad_secrets[i]),
                   DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(\"<a@b>\")", directory_rcpt(dir, "<alice@example.org>"),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(\"a@b SIZE=1\")", directory_rcpt(dir, "alice@example.org SIZE=1"),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("auth(long user)", directory_auth(dir, long_user, SECRET),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("auth(long secret)", directory_auth(dir, "alice@example.org", long_secret),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(long address)", directory_rcpt(dir, long_address),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("is_local_domain(long domain)", directory_is_local_domain(dir, long_domain),
               DIRECTORY_RESULT_INVALID_INPUT);
        expect("auth(1 MiB user)", directory_auth(dir, huge, huge), DIRECTORY_RESULT_INVALID_INPUT);
        expect("rcpt(1 MiB)", directory_rcpt(dir, huge), DIRECTORY_RESULT_INVALID_INPUT);
        /* What is allowed still works without the network. */
        expect("is_local_domain(EXAMPLE.org.)", directory_is_local_domain(dir, "EXAMPLE.org."),
               DIRECTORY_RESULT_OK);
    }
    directory_close(NULL);
    directory_close(NULL);
    for (d = 0; d < 3; d++)
        directory_close(dirs[d]);

    /* Not one connection came: accept finds nothing. */
    accepted = accept(listener, NULL, NULL);
    checks++;
    if (accepted >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        failures++;
        printf("FAIL a connection reached the server (accept: %d, %s)\n", accepted,
               strerror(errno));
    }
    close(listener);
    /* The static strings. */
    checks++;
    if (strcmp(directory_result_name(999), "UNKNOWN") != 0 || directory_version()[0] == '\0') {
        failures++;
        printf("FAIL result name or version\n");
    }
    free(long_user);
    free(long_secret);
    free(long_address);
    free(long_domain);
    free(huge);
    printf("hostile: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
