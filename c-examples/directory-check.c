/*
 * directory-check -- ask a remote directory from the command line.
 *
 *   directory-check [-c FILE] [-d NAME] [-v] auth USER
 *   directory-check [-c FILE] [-d NAME] [-v] rcpt ADDRESS...
 *   directory-check [-c FILE] [-d NAME] [-v] domain DOMAIN...
 *   directory-check [-c FILE] [-d NAME] --show-config
 *   directory-check [-c FILE] --check-config
 *   directory-check --help
 *
 * The password for "auth" is read from the terminal with echo off, or from
 * standard input when that is not a terminal (one trailing newline is
 * dropped). It is never printed and is wiped from memory after use.
 * The exit status is the result code (see usage() below); with several
 * addresses or domains it is the highest one.
 */
#define _DEFAULT_SOURCE /* explicit_bzero, getopt, sigaction */
#define _GNU_SOURCE     /* getopt_long (glibc; musl and the BSDs have it too) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "remote_directory.h"

#define DEFAULT_CONFIG "/etc/remote-directory.toml"
#define EXIT_USAGE 64 /* EX_USAGE of sysexits.h */
/* The library refuses longer secrets (4096 bytes); the buffer has room to notice. */
#define PASSWORD_MAX DIRECTORY_MAX_SECRET

static void usage(FILE *out)
{
    fprintf(out,
"usage: directory-check [-c FILE] [-d NAME] [-v] [--client-ip IP] auth USER\n"
"       directory-check [-c FILE] [-d NAME] [-v] rcpt ADDRESS...\n"
"       directory-check [-c FILE] [-d NAME] [-v] domain DOMAIN...\n"
"       directory-check [-c FILE] [-d NAME] --show-config\n"
"       directory-check [-c FILE] --check-config\n"
"       directory-check --help\n"
"\n"
"Ask the remote directory configured in FILE whether a password is right\n"
"(auth), whether recipients exist (rcpt) or whether domains are local (domain).\n"
"\n"
"  --show-config   print the effective configuration of directory NAME, or of\n"
"                  every directory without -d: every key with the value in force,\n"
"                  defaults filled in, secrets masked (exit 0, or 5 if invalid)\n"
"  --check-config  check every directory of FILE, reporting each one, not only\n"
"                  the first error (exit 0 when all are valid, else 5)\n"
"  -c FILE   configuration file (default " DEFAULT_CONFIG ")\n"
"  -d NAME   which [directory.NAME] to use (needed when FILE has several)\n"
"  -v        also print the library's message for each answer\n"
"  --client-ip IP  auth: the login comes from this client address (IPv4 or\n"
"                  IPv6), as directory_auth_from: throttle.client counts it and\n"
"                  forward.client-ip tells the server; not an address: exit 4\n"
"\n"
"auth reads the password from the terminal without echo, or from standard\n"
"input when it is not a terminal (one trailing newline is removed).\n"
"\n"
"Exit status (for several arguments, the highest of their statuses):\n"
"  0  OK             password accepted / recipient exists / domain is local\n"
"  1  REJECTED       wrong password or unknown user / no such recipient / not local\n"
"  2  TEMPORARY      no answer now: network, timeout, TLS, server 4xx\n"
"  3  UNSUPPORTED    not possible with this directory type (rcpt on imap)\n"
"  4  INVALID_INPUT  argument not UTF-8, contains CR/LF/NUL, or too long\n"
"  5  CONFIG         configuration file missing, unreadable or invalid\n"
"  6  INTERNAL       a bug in the library (please report it)\n"
" 64  usage error\n");
}

static int usage_error(const char *message)
{
    fprintf(stderr, "directory-check: %s\n", message);
    fprintf(stderr, "Try 'directory-check --help' for more information.\n");
    return EXIT_USAGE;
}

/* ---- reading the password ---------------------------------------------- */

static int tty_fd = -1;
static struct termios saved_termios;
static volatile sig_atomic_t echo_off = 0;

/* Put the terminal back if we are interrupted while echo is off. */
static void restore_and_die(int sig)
{
    if (echo_off)
        tcsetattr(tty_fd, TCSAFLUSH, &saved_termios);
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * Read the password into buf (size bytes) with read(2) only, so that no stdio
 * buffer keeps a copy. From a terminal: one line; otherwise: everything up to
 * EOF. One trailing newline is removed. Returns the length, -1 on a read
 * error, -2 when the password is longer than PASSWORD_MAX (both reported).
 */
static long read_secret(int fd, char *buf, size_t size, int one_line)
{
    size_t len = 0;
    char extra;

    while (len < size - 1) {
        ssize_t n = read(fd, buf + len, size - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("directory-check: reading the password");
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (one_line && buf[len - 1] == '\n')
            break;
    }
    if (len == size - 1 && !one_line && read(fd, &extra, 1) == 1)
        len = size; /* more was coming: too long */
    else if (len > 0 && buf[len - 1] == '\n')
        len--;
    buf[len < size ? len : size - 1] = '\0';
    if (len > PASSWORD_MAX) {
        fprintf(stderr, "directory-check: password longer than %d bytes\n", PASSWORD_MAX);
        return -2;
    }
    return (long)len;
}

static long get_password(char *buf, size_t size)
{
    struct termios quiet;
    struct sigaction sa;
    long len;

    if (!isatty(STDIN_FILENO))
        return read_secret(STDIN_FILENO, buf, size, 0);

    tty_fd = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (tty_fd < 0) {
        perror("directory-check: /dev/tty");
        return -1;
    }
    if (tcgetattr(tty_fd, &saved_termios) != 0) {
        perror("directory-check: tcgetattr");
        close(tty_fd);
        return -1;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = restore_and_die;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    quiet = saved_termios;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
    quiet.c_lflag |= ECHONL;
    /* Echo off before the prompt, not after: TCSAFLUSH drops input not read yet, so a
       password typed (or written by a program) as soon as the prompt shows would be lost. */
    echo_off = 1;
    if (tcsetattr(tty_fd, TCSAFLUSH, &quiet) != 0 || write(tty_fd, "Password: ", 10) != 10) {
        perror("directory-check: terminal");
        tcsetattr(tty_fd, TCSAFLUSH, &saved_termios);
        echo_off = 0;
        close(tty_fd);
        return -1;
    }
    len = read_secret(tty_fd, buf, size, 1);
    tcsetattr(tty_fd, TCSAFLUSH, &saved_termios);
    echo_off = 0;
    close(tty_fd);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGQUIT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    return len;
}

/* ---- the checks --------------------------------------------------------- */

/* Print an argument as given, but with control characters made visible. */
static void print_visible(const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

/* --show-config and --check-config: read FILE, connect nowhere. */
static int show_config(const char *config, const char *name)
{
    char *text = NULL;
    directory_result r = directory_config_show(config, name, &text);
    if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "directory-check: %s: %s\n", directory_result_name(r),
                directory_last_error());
        return (int)r;
    }
    fputs(text, stdout);
    directory_string_free(text);
    return 0;
}

static int check_config(const char *config)
{
    char *report = NULL;
    directory_result r = directory_config_check(config, &report);
    if (report != NULL) {
        fputs(report, stdout);
        directory_string_free(report);
    } else if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "directory-check: %s: %s\n", directory_result_name(r),
                directory_last_error());
    }
    return (int)r;
}

static void show(const char *subject, directory_result r, int verbose)
{
    print_visible(subject);
    if (verbose && r != DIRECTORY_RESULT_OK)
        printf(": %s: %s\n", directory_result_name(r), directory_last_error());
    else
        printf(": %s\n", directory_result_name(r));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *config = DEFAULT_CONFIG, *name = NULL, *command, *client_ip = NULL;
    int verbose = 0, opt, i, worst = 0, mode = 0;
    enum { SHOW_CONFIG = 1, CHECK_CONFIG = 2, CLIENT_IP = 3 };
    static const struct option long_options[] = {
        {"show-config", no_argument, NULL, SHOW_CONFIG},
        {"check-config", no_argument, NULL, CHECK_CONFIG},
        {"client-ip", required_argument, NULL, CLIENT_IP},
        {NULL, 0, NULL, 0},
    };
    directory *dir = NULL;
    directory_result r;

    for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    }
    opterr = 0;
    /* '+': options come before the command, so an argument may start with '-'. */
    while ((opt = getopt_long(argc, argv, "+c:d:v", long_options, NULL)) != -1) {
        switch (opt) {
        case SHOW_CONFIG:
        case CHECK_CONFIG:
            if (mode != 0 && mode != opt)
                return usage_error("--show-config and --check-config exclude each other");
            mode = opt;
            break;
        case CLIENT_IP: client_ip = optarg; break;
        case 'c': config = optarg; break;
        case 'd': name = optarg; break;
        case 'v': verbose = 1; break;
        case ':':
        case '?':
        default: {
            char msg[64];
            if (optopt == 'c' || optopt == 'd')
                snprintf(msg, sizeof msg, "option -%c needs an argument", optopt);
            else if (optopt == CLIENT_IP)
                snprintf(msg, sizeof msg, "option --client-ip needs an argument");
            else if (optopt == 0)
                snprintf(msg, sizeof msg, "unknown option %.40s", argv[optind - 1]);
            else
                snprintf(msg, sizeof msg, "unknown option -%c", optopt);
            return usage_error(msg);
        }
        }
    }
    if (mode != 0) {
        if (optind < argc)
            return usage_error("--show-config and --check-config take no command");
        if (mode == CHECK_CONFIG && name != NULL)
            return usage_error("--check-config checks every directory; -d does not apply");
        return mode == SHOW_CONFIG ? show_config(config, name) : check_config(config);
    }
    if (optind >= argc)
        return usage_error("missing command (auth, rcpt or domain)");
    command = argv[optind++];
    if (client_ip != NULL && strcmp(command, "auth") != 0)
        return usage_error("--client-ip applies to auth only");
    if (strcmp(command, "auth") == 0) {
        if (argc - optind != 1)
            return usage_error("auth takes exactly one USER (the password is read, not given)");
    } else if (strcmp(command, "rcpt") == 0 || strcmp(command, "domain") == 0) {
        if (optind >= argc)
            return usage_error(strcmp(command, "rcpt") == 0 ? "rcpt needs at least one ADDRESS"
                                                            : "domain needs at least one DOMAIN");
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "unknown command '%.60s' (auth, rcpt or domain)", command);
        return usage_error(msg);
    }

    r = directory_open(config, name, &dir);
    if (r != DIRECTORY_RESULT_OK) {
        fprintf(stderr, "directory-check: %s: %s\n", directory_result_name(r),
                directory_last_error());
        return (int)r;
    }

    if (strcmp(command, "auth") == 0) {
        char password[PASSWORD_MAX + 2];
        long len = get_password(password, sizeof password);
        if (len == -2) {
            worst = DIRECTORY_RESULT_INVALID_INPUT;
        } else if (len < 0) {
            worst = DIRECTORY_RESULT_INTERNAL;
        } else {
            r = directory_auth_from(dir, argv[optind], password, client_ip);
            show(argv[optind], r, verbose);
            worst = (int)r;
        }
        explicit_bzero(password, sizeof password);
    } else {
        for (i = optind; i < argc; i++) {
            r = strcmp(command, "rcpt") == 0 ? directory_rcpt(dir, argv[i])
                                             : directory_is_local_domain(dir, argv[i]);
            show(argv[i], r, verbose);
            if ((int)r > worst)
                worst = (int)r;
        }
    }
    directory_close(dir);
    return worst;
}
