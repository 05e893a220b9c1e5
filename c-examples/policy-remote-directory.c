/*
 * policy-remote-directory -- a Postfix SMTP access policy service that
 * refuses recipients which the remote directory does not know.
 *
 *   policy-remote-directory [-c FILE] [-d NAME] [-v] [-S]       (spawn(8) mode)
 *   policy-remote-directory [-c FILE] [-d NAME] [-v] -l HOST:PORT
 *
 * Postfix's policy delegation protocol: a request is "name=value" lines
 * ended by an empty line; the reply is "action=...\n\n". For
 * request=smtpd_access_policy in protocol_state=RCPT the recipient is
 * looked up:
 *
 *   domain not local (lookup.domains)   action=DUNNO  (not ours to judge)
 *   directory_rcpt OK                   action=DUNNO  (later restrictions decide)
 *   directory_rcpt REJECTED             action=550 5.1.1 user unknown
 *   anything else                       action=DEFER_IF_PERMIT 4.3.0 recipient
 *                                              lookup temporarily unavailable
 *   no recipient, other states/requests action=DUNNO
 *
 * Postfix puts "<addr>: Recipient address rejected: " before the text, so the
 * SMTP client sees "550 5.1.1 <addr>: Recipient address rejected: user
 * unknown". The refusal is a numeric action because "REJECT 5.1.1 ..." would
 * be answered with access_map_reject_code (554 by default), while Postfix
 * itself refuses unknown users with 550.
 *
 * A malformed request (a line over 4096 bytes, a line without '=', more
 * than 128 attributes) is logged and that connection is closed.
 *
 * Without -l the service talks on stdin/stdout, one connection per process,
 * as spawn(8) runs it. spawn(8) connects stderr to the same socket, so in
 * that case (or with -S) messages go to syslog (facility mail) instead.
 * With -l it listens on HOST:PORT itself, runs one thread per client and all
 * threads share one directory handle (and its pool of server connections).
 * Messages then go to stderr. SIGTERM or SIGINT stop the listener.
 *
 * Exit status: 0 at end of input or after SIGTERM; 65 when a malformed
 * request made it close stdin/stdout; 64 usage error; 71 cannot listen;
 * otherwise the directory_result of opening the configuration (5 CONFIG).
 */
#define _DEFAULT_SOURCE /* getaddrinfo, sigaction, strcasecmp, syslog */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <syslog.h>
#include <unistd.h>

#include "remote_directory.h"

#define DEFAULT_CONFIG "/etc/remote-directory.toml"
#define MAX_LINE 4096       /* bytes per attribute line, without the newline */
#define MAX_ATTRIBUTES 128  /* Postfix 3.x sends about 30 */
#define MAX_CLIENTS 512     /* listener: connections served at once */
#define IDLE_TIMEOUT 600    /* seconds; Postfix drops idle ones after 300 */
#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_OSERR 71

static int use_syslog = 0;
static int verbose = 0;

static void logmsg(int priority, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (use_syslog) {
        vsyslog(priority, fmt, ap);
    } else {
        char line[2048];
        vsnprintf(line, sizeof line, fmt, ap);
        fprintf(stderr, "policy-remote-directory: %s\n", line);
    }
    va_end(ap);
}

/* ---- one connection ---------------------------------------------------- */

struct reader {
    int fd;
    char buf[8192];
    size_t start, end;
};

/*
 * Next line into line[MAX_LINE + 1], without "\n" (and without a "\r"
 * before it). Returns 1 for a line, 0 at end of input (also in the middle
 * of a line: the request is incomplete, so nothing is answered), -1 when
 * the line is too long or reading failed.
 */
static int read_line(struct reader *rd, char *line)
{
    size_t len = 0;

    for (;;) {
        while (rd->start < rd->end) {
            char c = rd->buf[rd->start++];
            if (c == '\n') {
                if (len > 0 && line[len - 1] == '\r')
                    len--;
                if (len > MAX_LINE)
                    return -1;
                line[len] = '\0';
                return 1;
            }
            if (len == MAX_LINE + 1) /* room for one '\r' before '\n' */
                return -1;
            line[len++] = c;
        }
        {
            ssize_t n = read(rd->fd, rd->buf, sizeof rd->buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                logmsg(LOG_WARNING, "read: %s", strerror(errno));
                return -1;
            }
            if (n == 0)
                return 0;
            rd->start = 0;
            rd->end = (size_t)n;
        }
    }
}

static int write_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Decide one request. action has room for MAX_LINE + 200 bytes. */
static void decide(directory *dir, const char *request, const char *state,
                   const char *recipient, char *action, size_t size)
{
    const char *at;
    directory_result r;

    snprintf(action, size, "DUNNO");
    if (strcmp(request, "smtpd_access_policy") != 0 || strcasecmp(state, "RCPT") != 0 ||
        recipient[0] == '\0')
        return;

    at = strrchr(recipient, '@');
    if (at == NULL || at[1] == '\0')
        return; /* no domain: not a question for a remote directory */
    r = directory_is_local_domain(dir, at + 1);
    if (r != DIRECTORY_RESULT_OK) {
        if (r != DIRECTORY_RESULT_REJECTED)
            logmsg(LOG_WARNING, "domain of <%s>: %s: %s", recipient,
                   directory_result_name(r), directory_last_error());
        return;
    }

    r = directory_rcpt(dir, recipient);
    if (r == DIRECTORY_RESULT_OK) {
        if (verbose)
            logmsg(LOG_INFO, "<%s>: OK", recipient);
        return;
    }
    if (r == DIRECTORY_RESULT_REJECTED) {
        if (verbose)
            logmsg(LOG_INFO, "<%s>: REJECTED: %s", recipient, directory_last_error());
        /* Postfix puts "<recipient>: Recipient address rejected: " before the text
           of this action and of DEFER_IF_PERMIT. */
        snprintf(action, size, "550 5.1.1 user unknown");
        return;
    }
    logmsg(LOG_WARNING, "<%s>: %s: %s", recipient, directory_result_name(r),
           directory_last_error());
    snprintf(action, size, "DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable");
}

/*
 * Answer requests on in/out until end of input or a malformed request.
 * Returns 0 at a clean end of input, -1 if the connection was given up.
 */
static int serve(directory *dir, int in, int out, const char *peer)
{
    /* Fixed sizes: about 25 KiB of stack per connection thread. */
    struct reader *rd = malloc(sizeof *rd);
    char line[MAX_LINE + 2];
    char request[MAX_LINE + 1], state[MAX_LINE + 1], recipient[MAX_LINE + 1];
    char reply[MAX_LINE + 256];
    int attributes = 0, rc = -1;

    if (rd == NULL) {
        logmsg(LOG_ERR, "%s: out of memory", peer);
        return -1;
    }
    rd->fd = in;
    rd->start = rd->end = 0;
    request[0] = state[0] = recipient[0] = '\0';

    for (;;) {
        int got = read_line(rd, line);
        char *eq;

        if (got == 0) {
            if (attributes > 0)
                logmsg(LOG_WARNING, "%s: connection ended within a request", peer);
            rc = 0;
            break;
        }
        if (got < 0) {
            logmsg(LOG_ERR, "%s: malformed request: line longer than %d bytes "
                            "(or read error); closing", peer, MAX_LINE);
            break;
        }
        if (line[0] == '\0') { /* end of request */
            char action[MAX_LINE + 200];
            int n;
            decide(dir, request, state, recipient, action, sizeof action);
            n = snprintf(reply, sizeof reply, "action=%s\n\n", action);
            if (n < 0 || (size_t)n >= sizeof reply || write_all(out, reply, (size_t)n) != 0) {
                logmsg(LOG_WARNING, "%s: cannot send the reply: %s", peer, strerror(errno));
                break;
            }
            attributes = 0;
            request[0] = state[0] = recipient[0] = '\0';
            continue;
        }
        if (++attributes > MAX_ATTRIBUTES) {
            logmsg(LOG_ERR, "%s: malformed request: more than %d attributes; closing",
                   peer, MAX_ATTRIBUTES);
            break;
        }
        eq = strchr(line, '=');
        if (eq == NULL) {
            logmsg(LOG_ERR, "%s: malformed request: attribute line without '='; closing",
                   peer);
            break;
        }
        *eq = '\0';
        if (strcmp(line, "request") == 0)
            strcpy(request, eq + 1);
        else if (strcmp(line, "protocol_state") == 0)
            strcpy(state, eq + 1);
        else if (strcmp(line, "recipient") == 0)
            strcpy(recipient, eq + 1);
    }
    free(rd);
    return rc;
}

/* ---- listener ----------------------------------------------------------- */

static volatile sig_atomic_t stopping = 0;
static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static int clients = 0;

struct client {
    directory *dir;
    int fd;
    char peer[128];
};

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static void *client_thread(void *arg)
{
    struct client *c = arg;

    serve(c->dir, c->fd, c->fd, c->peer);
    close(c->fd);
    pthread_mutex_lock(&clients_lock);
    clients--;
    pthread_mutex_unlock(&clients_lock);
    free(c);
    return NULL;
}

/* "HOST:PORT" or "[HOST]:PORT" into host and port; 0 on success. */
static int split_host_port(const char *spec, char *host, size_t hsize, const char **port)
{
    const char *colon;
    size_t hlen;

    if (spec[0] == '[') {
        const char *close_br = strchr(spec, ']');
        if (close_br == NULL || close_br[1] != ':')
            return -1;
        hlen = (size_t)(close_br - spec - 1);
        spec++;
        colon = close_br + 1;
    } else {
        colon = strrchr(spec, ':');
        if (colon == NULL)
            return -1;
        hlen = (size_t)(colon - spec);
    }
    if (hlen == 0 || hlen >= hsize || colon[1] == '\0')
        return -1;
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    *port = colon + 1;
    return 0;
}

static int listen_on(const char *spec)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res, *ai;
    int fd = -1, err, one = 1;

    if (split_host_port(spec, host, sizeof host, &port) != 0) {
        logmsg(LOG_ERR, "-l wants HOST:PORT (or [IPv6]:PORT), not \"%s\"", spec);
        return -2;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    err = getaddrinfo(host, port, &hints, &res);
    if (err != 0) {
        logmsg(LOG_ERR, "%s: %s", spec, gai_strerror(err));
        return -1;
    }
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
        errno = err;
    }
    freeaddrinfo(res);
    if (fd < 0)
        logmsg(LOG_ERR, "cannot listen on %s: %s", spec, strerror(errno));
    return fd;
}

static int run_listener(directory *dir, int lfd, const char *spec)
{
    struct sigaction sa;
    sigset_t block, old;
    pthread_attr_t attr;

    /* No SA_RESTART: accept() returns EINTR and the loop sees `stopping`. */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* Worker threads keep these blocked, so the main thread receives them. */
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    logmsg(LOG_INFO, "listening on %s (directory %s)", spec, directory_version());
    while (!stopping) {
        struct sockaddr_storage addr;
        socklen_t alen = sizeof addr;
        struct timeval idle;
        struct client *c;
        pthread_t tid;
        int fd = accept(lfd, (struct sockaddr *)&addr, &alen), busy;

        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                logmsg(LOG_WARNING, "accept: %s", strerror(errno));
            continue;
        }
        pthread_mutex_lock(&clients_lock);
        busy = clients >= MAX_CLIENTS;
        if (!busy)
            clients++;
        pthread_mutex_unlock(&clients_lock);
        if (busy) {
            logmsg(LOG_WARNING, "more than %d clients; refusing one", MAX_CLIENTS);
            close(fd);
            continue;
        }
        idle.tv_sec = IDLE_TIMEOUT;
        idle.tv_usec = 0;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);

        c = malloc(sizeof *c);
        if (c != NULL) {
            c->dir = dir;
            c->fd = fd;
            if (getnameinfo((struct sockaddr *)&addr, alen, c->peer, sizeof c->peer, NULL, 0,
                            NI_NUMERICHOST) != 0)
                strcpy(c->peer, "client");
        }
        pthread_sigmask(SIG_BLOCK, &block, &old);
        if (c == NULL || pthread_create(&tid, &attr, client_thread, c) != 0) {
            logmsg(LOG_ERR, "cannot start a thread for a client");
            close(fd);
            free(c);
            pthread_mutex_lock(&clients_lock);
            clients--;
            pthread_mutex_unlock(&clients_lock);
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    close(lfd);
    logmsg(LOG_INFO, "stopping");
    /* Threads may still be inside directory_rcpt(); directory_close() must
       only run after every call has returned, so the handle is left to the
       end of the process. */
    return 0;
}

/* spawn(8) connects stderr to the client socket: is fd 2 the same as fd 0? */
static int stderr_is_the_client(void)
{
    struct stat in, err;

    return fstat(STDIN_FILENO, &in) == 0 && fstat(STDERR_FILENO, &err) == 0 &&
           S_ISSOCK(in.st_mode) && in.st_dev == err.st_dev && in.st_ino == err.st_ino;
}

static int usage(const char *message)
{
    if (message != NULL)
        fprintf(stderr, "policy-remote-directory: %s\n", message);
    fprintf(stderr,
            "usage: policy-remote-directory [-c FILE] [-d NAME] [-v] [-S] [-l HOST:PORT]\n"
            "  -c FILE       configuration file (default " DEFAULT_CONFIG ")\n"
            "  -d NAME       which [directory.NAME] to use\n"
            "  -l HOST:PORT  listen there (one thread per client) instead of\n"
            "                serving one client on stdin/stdout (spawn(8))\n"
            "  -v            log every recipient decision\n"
            "  -S            log to syslog (automatic when stderr is the client socket)\n");
    return message != NULL ? EXIT_USAGE : 0;
}

int main(int argc, char **argv)
{
    const char *config = DEFAULT_CONFIG, *name = NULL, *listen_spec = NULL;
    directory *dir = NULL;
    directory_result r;
    int opt, lfd = -1;

    if (argc > 1 && strcmp(argv[1], "--help") == 0)
        return usage(NULL);
    opterr = 0;
    while ((opt = getopt(argc, argv, "c:d:l:vSh")) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': name = optarg; break;
        case 'l': listen_spec = optarg; break;
        case 'v': verbose = 1; break;
        case 'S': use_syslog = 1; break;
        case 'h': return usage(NULL);
        default:
            return usage(optopt == 'c' || optopt == 'd' || optopt == 'l'
                             ? "option needs an argument"
                             : "unknown option");
        }
    }
    if (optind < argc)
        return usage("unexpected argument");
    if (listen_spec == NULL && stderr_is_the_client())
        use_syslog = 1;
    if (use_syslog)
        openlog("policy-remote-directory", LOG_PID, LOG_MAIL);
    /* A client that goes away must not kill the service with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);

    r = directory_open(config, name, &dir);
    if (r != DIRECTORY_RESULT_OK) {
        logmsg(LOG_ERR, "%s: %s", directory_result_name(r), directory_last_error());
        return (int)r;
    }
    if (listen_spec != NULL) {
        lfd = listen_on(listen_spec);
        if (lfd < 0) {
            directory_close(dir);
            return lfd == -2 ? EXIT_USAGE : EXIT_OSERR;
        }
        return run_listener(dir, lfd, listen_spec);
    }
    r = serve(dir, STDIN_FILENO, STDOUT_FILENO, "stdin") == 0 ? 0 : EXIT_DATAERR;
    directory_close(dir);
    return (int)r;
}
