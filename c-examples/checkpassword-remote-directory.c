/*
 * checkpassword-remote-directory -- the checkpassword interface (qmail's,
 * as used by Dovecot's "passdb { driver = checkpassword }") on top of
 * remote-directory.
 *
 *   checkpassword-remote-directory PROGRAM [ARG...]
 *
 * Reads "user\0password\0" (optionally followed by more NUL-terminated
 * fields, which are ignored) from file descriptor 3, at most 512 bytes, and
 * asks the directory. On success it sets USER to the user name and execs
 * PROGRAM (Dovecot passes its checkpassword-reply there, which reads USER
 * and reports the result on fd 4).
 *
 * Environment:
 *   REMOTE_DIRECTORY_CONFIG  configuration file (default /etc/remote-directory.toml)
 *   REMOTE_DIRECTORY_NAME    which [directory.NAME] to use (optional)
 *   TCPREMOTEIP              the client's address, set by Dovecot (and by
 *                            tcpserver); passed to directory_auth_from for
 *                            throttle.client and forward.client-ip. Unset or
 *                            not an IP address: the client is unknown.
 *
 * Exit status (when PROGRAM is not run):
 *   1    password rejected, unknown user, or unusable user/password
 *        (REJECTED, INVALID_INPUT)
 *   2    misuse: no PROGRAM, fd 3 unreadable, over 512 bytes or not
 *        "user\0password\0"; or a Dovecot lookup without a password
 *        (AUTHORIZED=1: userdb or credentials lookup, not supported)
 *   111  temporary or local problem: TEMPORARY, CONFIG, UNSUPPORTED,
 *        INTERNAL, or PROGRAM could not be run
 * Diagnostics go to stderr (Dovecot logs them); the password never does.
 */
#define _DEFAULT_SOURCE /* explicit_bzero, setenv */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "remote_directory.h"

#define DEFAULT_CONFIG "/etc/remote-directory.toml"
#define MAX_INPUT 512 /* what the checkpassword interface allows */

#define EXIT_REJECTED 1
#define EXIT_MISUSE 2
#define EXIT_TEMPORARY 111

static const char *me = "checkpassword-remote-directory";

/* Read all of fd 3 into buf; returns the length, or -1 (message printed). */
static long read_fd3(char *buf, size_t size)
{
    size_t len = 0;

    for (;;) {
        ssize_t n = read(3, buf + len, size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: cannot read fd 3: %s\n", me, strerror(errno));
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == size) {
            fprintf(stderr, "%s: more than %d bytes on fd 3\n", me, MAX_INPUT);
            return -1;
        }
    }
    close(3);
    return (long)len;
}

static int exit_status(directory_result r)
{
    switch (r) {
    case DIRECTORY_RESULT_REJECTED:
    case DIRECTORY_RESULT_INVALID_INPUT:
        return EXIT_REJECTED;
    default: /* TEMPORARY, CONFIG, UNSUPPORTED, INTERNAL, later additions */
        return EXIT_TEMPORARY;
    }
}

/* TCPREMOTEIP if it is an IP address; NULL (unknown) otherwise. */
static const char *client_address(const char *me)
{
    const char *ip = getenv("TCPREMOTEIP");
    unsigned char buf[sizeof(struct in6_addr)];

    if (ip == NULL || *ip == '\0')
        return NULL;
    if (inet_pton(AF_INET, ip, buf) == 1 || inet_pton(AF_INET6, ip, buf) == 1)
        return ip;
    fprintf(stderr, "%s: TCPREMOTEIP is not an IP address; the client counts as unknown\n", me);
    return NULL;
}

int main(int argc, char **argv)
{
    /* One more byte than allowed, to notice oversized input. */
    char input[MAX_INPUT + 1];
    const char *config, *name, *user, *password, *end;
    directory *dir = NULL;
    directory_result r;
    long len;

    if (argc < 2) {
        fprintf(stderr, "usage: %s PROGRAM [ARG...]  (user\\0password\\0 on fd 3)\n", me);
        return EXIT_MISUSE;
    }
    config = getenv("REMOTE_DIRECTORY_CONFIG");
    if (config == NULL || *config == '\0')
        config = DEFAULT_CONFIG;
    name = getenv("REMOTE_DIRECTORY_NAME");
    if (name != NULL && *name == '\0')
        name = NULL;

    len = read_fd3(input, sizeof input);
    if (len < 0) {
        explicit_bzero(input, sizeof input);
        return EXIT_MISUSE;
    }
    /* user\0password\0[timestamp\0...]: both fields must be terminated. */
    user = input;
    end = memchr(input, '\0', (size_t)len);
    password = end ? end + 1 : NULL;
    if (end == NULL || memchr(password, '\0', (size_t)(input + len - password)) == NULL) {
        fprintf(stderr, "%s: fd 3 did not hold \"user\\0password\\0\"\n", me);
        explicit_bzero(input, sizeof input);
        return EXIT_MISUSE;
    }
    if (getenv("AUTHORIZED") != NULL) {
        /* Dovecot sets AUTHORIZED=1 when it wants a lookup without a
           password (userdb, or passdb for non-plaintext mechanisms). A remote
           server cannot answer that; use another userdb (e.g. static). */
        fprintf(stderr, "%s: lookup without a password (AUTHORIZED=1) for %s is not "
                        "supported; use it as passdb with plaintext mechanisms only\n",
                me, user);
        explicit_bzero(input, sizeof input);
        return EXIT_MISUSE;
    }

    r = directory_open(config, name, &dir);
    if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "%s: %s: %s\n", me, directory_result_name(r), directory_last_error());
        explicit_bzero(input, sizeof input);
        return EXIT_TEMPORARY;
    }
    r = directory_auth_from(dir, user, password, client_address(me));
    directory_close(dir);
    /* The password is not needed any more; the user name still is. */
    explicit_bzero((char *)password, (size_t)(input + sizeof input - password));

    if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "%s: %s: %s: %s\n", me, user, directory_result_name(r),
                directory_last_error());
        return exit_status(r);
    }

    /* checkpassword convention: tell the next program who logged in. */
    if (setenv("USER", user, 1) != 0) {
        fprintf(stderr, "%s: setenv USER: %s\n", me, strerror(errno));
        return EXIT_TEMPORARY;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "%s: cannot run %s: %s\n", me, argv[1], strerror(errno));
    return EXIT_TEMPORARY;
}
