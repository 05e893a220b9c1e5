/*
 * example.c -- the whole C API of remote-directory in one small program.
 *
 * Usage:
 *   example CONFIG [NAME] CHECK...
 *
 * CONFIG is a TOML file with one or more [directory.<name>] tables; NAME picks
 * one of them (leave it out when the file defines exactly one). Each CHECK is
 * a few words on the command line, run in order:
 *
 *   auth USER PASSWORD EXPECTED   is PASSWORD right for USER?
 *   rcpt ADDRESS EXPECTED         does this recipient exist?
 *   domain DOMAIN EXPECTED        is DOMAIN one of our local domains?
 *   use NAME                      switch to directory NAME of the same CONFIG
 *
 * EXPECTED is a result name (OK, REJECTED, TEMPORARY, UNSUPPORTED,
 * INVALID_INPUT, CONFIG, INTERNAL) or its number. Each call is printed with
 * its result and directory_last_error(); the exit status is 0 when every
 * result was the expected one, 1 when one differed, 2 on a usage or config
 * error. (A password on the command line is visible to other local users in
 * ps(1): fine for a demonstration against test accounts, not for real ones;
 * directory-check reads it from the terminal instead.)
 *
 * Against the throwaway Dovecot of tests/servers/servers.sh, with an IMAP
 * directory for passwords and an LMTP one for recipients:
 *
 *   example dovecot.toml imap \
 *       auth alice@example.org alice-pass-1 OK \
 *       auth alice@example.org wrong-password REJECTED \
 *       domain example.org OK \
 *       domain example.net REJECTED \
 *     use lmtp \
 *       rcpt alice@example.org OK \
 *       rcpt nosuchuser@example.org REJECTED
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "remote_directory.h"

/* "OK" -> 0, "REJECTED" -> 1, ..., or a plain number; -1 if neither. */
static long parse_expected(const char *word)
{
    uint32_t r;
    char *end;
    long n;

    for (r = 0; r <= DIRECTORY_RESULT_INTERNAL; r++)
        if (strcmp(word, directory_result_name(r)) == 0)
            return (long)r;
    n = strtol(word, &end, 10);
    if (*word != '\0' && *end == '\0' && n >= 0 && n <= DIRECTORY_RESULT_INTERNAL)
        return n;
    return -1;
}

/* Print one call and its outcome; count it as failed if unexpected. */
static void report(const char *call, directory_result got, long expected,
                   int *failures)
{
    int as_expected = (long)got == expected;

    printf("%-44s -> %-13s %s\n", call, directory_result_name(got),
           as_expected ? "(as expected)" : "(UNEXPECTED)");
    /* The message belongs to this thread and to the call just made. */
    if (got != DIRECTORY_RESULT_OK)
        printf("%-44s    last error: %s\n", "", directory_last_error());
    if (!as_expected) {
        printf("%-44s    expected:   %s\n", "",
               directory_result_name((uint32_t)expected));
        (*failures)++;
    }
}

static directory *open_directory(const char *config, const char *name)
{
    directory *dir = NULL;
    directory_result r = directory_open(config, name, &dir);

    printf("directory_open(\"%s\", %s%s%s) -> %s\n", config,
           name ? "\"" : "", name ? name : "NULL", name ? "\"" : "",
           directory_result_name(r));
    if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "example: %s\n", directory_last_error());
        return NULL;
    }
    return dir;
}

static int is_keyword(const char *word)
{
    return strcmp(word, "auth") == 0 || strcmp(word, "rcpt") == 0 ||
           strcmp(word, "domain") == 0 || strcmp(word, "use") == 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: example CONFIG [NAME] CHECK...\n"
            "  CHECK: auth USER PASSWORD EXPECTED | rcpt ADDRESS EXPECTED\n"
            "       | domain DOMAIN EXPECTED | use NAME\n"
            "  EXPECTED: OK REJECTED TEMPORARY UNSUPPORTED INVALID_INPUT CONFIG INTERNAL\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *config, *name = NULL;
    directory *dir;
    int i = 2, failures = 0, checks = 0;
    char call[1024];

    if (argc < 2)
        return usage();
    config = argv[1];
    if (argc > 2 && !is_keyword(argv[2])) {
        name = argv[2];
        i = 3;
    }
    if (i >= argc)
        return usage();

    printf("remote-directory %s\n", directory_version());
    dir = open_directory(config, name);
    if (dir == NULL)
        return 2;

    while (i < argc) {
        const char *what = argv[i];
        int words = strcmp(what, "auth") == 0 ? 4 : strcmp(what, "use") == 0 ? 2 : 3;
        long expected;
        directory_result r;

        if (!is_keyword(what) || i + words > argc) {
            fprintf(stderr, "example: incomplete or unknown check at \"%s\"\n", what);
            directory_close(dir);
            return usage();
        }
        if (strcmp(what, "use") == 0) {
            directory_close(dir);
            dir = open_directory(config, argv[i + 1]);
            if (dir == NULL)
                return 2;
            i += words;
            continue;
        }
        expected = parse_expected(argv[i + words - 1]);
        if (expected < 0) {
            fprintf(stderr, "example: \"%s\" is not a result name\n", argv[i + words - 1]);
            directory_close(dir);
            return usage();
        }

        if (strcmp(what, "auth") == 0) {
            /* Never print the password itself, not even in an example. */
            r = directory_auth(dir, argv[i + 1], argv[i + 2]);
            snprintf(call, sizeof call, "directory_auth(\"%s\", \"***\")", argv[i + 1]);
        } else if (strcmp(what, "rcpt") == 0) {
            r = directory_rcpt(dir, argv[i + 1]);
            snprintf(call, sizeof call, "directory_rcpt(\"%s\")", argv[i + 1]);
        } else {
            r = directory_is_local_domain(dir, argv[i + 1]);
            snprintf(call, sizeof call, "directory_is_local_domain(\"%s\")", argv[i + 1]);
        }
        report(call, r, expected, &failures);
        checks++;
        i += words;
    }

    directory_close(dir);
    printf("%d of %d results as expected\n", checks - failures, checks);
    return failures == 0 ? 0 : 1;
}
