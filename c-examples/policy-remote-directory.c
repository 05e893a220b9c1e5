/*
 * policy-remote-directory -- the spawn(8) adapter of remote-directoryd's Postfix policy
 * service.
 *
 *   policy-remote-directory [-s SOCKET] [-t SECONDS] [-v] [-S]
 *
 * The policy rules (which recipients are refused with 550 5.1.1, which are deferred) live
 * in remote-directoryd (daemon.policy.*, daemon/src/policy.rs); this program has none of
 * its own. It reads Postfix policy requests on standard input, as spawn(8) runs it (one
 * process per smtpd connection), forwards each request unchanged to the daemon's policy
 * socket (daemon.policy.socket, or daemon.policy.listen as HOST:PORT) on one connection
 * kept across requests, and copies the daemon's reply ("action=..." and an empty line)
 * unchanged to standard output. It only frames: a request is lines ended by an empty
 * line, a reply the same.
 *
 * When the daemon cannot be reached, closes the connection without an answer, or is
 * silent for SECONDS, the program answers the daemon's own temporary answer itself,
 *     action=DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable
 * logs why, and connects again for the next request. It never answers DUNNO or a refusal
 * of its own: only the daemon decides. A kept connection that the daemon closed while it
 * was idle (daemon.idle-timeout) is replaced before the request is sent, and a request
 * whose kept connection fails before any byte of the answer is sent once more on a new
 * connection (policy requests are lookups: asking twice changes nothing).
 *
 * Bounds: a line over 4096 bytes or a request over 64 KiB (the daemon's own limits) is
 * logged and the program exits 65 without answering it; a reply over 8 KiB counts as the
 * daemon failing. Everything lives in fixed buffers.
 *
 * spawn(8) connects standard error to the client socket too, so when standard error is the
 * same socket as standard input (or with -S) messages go to syslog, facility mail.
 *
 * Exit status: 0 at end of input; 64 usage error (the options -c, -d and -l of the earlier
 * stand-alone program included: the daemon now has their job); 65 an over-long line or
 * request; 74 reading the request or writing the answer failed.
 */
#define _DEFAULT_SOURCE /* getaddrinfo, syslog, MSG_NOSIGNAL, SOCK_CLOEXEC */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* systemd's RuntimeDirectory=remote-directory, next to the daemon's other sockets. */
#define DEFAULT_SOCKET "/run/remote-directory/policy"
/* Below smtpd_policy_service_timeout (100 s), so smtpd reads this program's deferral
   rather than giving up itself; above the library's default timeout (30 s), so a slow
   lookup still gets the daemon's answer. */
#define DEFAULT_TIMEOUT 60
#define MAX_TIMEOUT 3600
#define MAX_LINE 4096            /* bytes per line, without the newline (daemon: the same) */
#define MAX_REQUEST (64 * 1024)  /* bytes per request (daemon: MAX_REQUEST, the same) */
#define MAX_REPLY 8192           /* the daemon's replies are one short line */
#define DEFER "action=DEFER_IF_PERMIT 4.3.0 recipient lookup temporarily unavailable\n\n"
#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_IOERR 74

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

/* ---- the daemon's address -------------------------------------------------------------- */

struct target {
    const char *spec;        /* as given, for messages */
    int is_unix;
    struct sockaddr_un un;
    char host[256];
    char port[8];
};

/* SOCKET is a path (it contains a '/') or HOST:PORT / [IPv6]:PORT. 0 on success. */
static int parse_target(const char *spec, struct target *t)
{
    const char *colon;
    size_t hlen;
    char *end;
    long port;

    memset(t, 0, sizeof *t);
    t->spec = spec;
    if (strchr(spec, '/') != NULL) {
        if (strlen(spec) >= sizeof t->un.sun_path)
            return -1;
        t->is_unix = 1;
        t->un.sun_family = AF_UNIX;
        strcpy(t->un.sun_path, spec);
        return 0;
    }
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
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (hlen == 0 || hlen >= sizeof t->host || colon[1] == '\0' || *end != '\0' ||
        errno != 0 || port < 1 || port > 65535)
        return -1;
    memcpy(t->host, spec, hlen);
    t->host[hlen] = '\0';
    snprintf(t->port, sizeof t->port, "%ld", port);
    return 0;
}

/* ---- time ----------------------------------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes: 1 ready, 0 timeout, -1 error. */
static int wait_for(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p;
        long long left = deadline - now_ms();
        int n;

        if (left <= 0)
            return 0;
        p.fd = fd;
        p.events = events;
        p.revents = 0;
        n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n > 0)
            return 1;
    }
}

/* ---- the connection to the daemon ------------------------------------------------------ */

/* What went wrong, for the log line and for whether a retry makes sense. */
enum failure { OK = 0, CONNECT, TIMEOUT, CLOSED, BROKEN, OVERLONG };

struct daemon {
    struct target target;
    int fd;                  /* -1: not connected */
    int timeout;             /* seconds */
    char why[256];           /* the last failure, for the log */
};

static void disconnect(struct daemon *d)
{
    if (d->fd >= 0)
        close(d->fd);
    d->fd = -1;
}

/* Non-blocking connect of one socket, bounded by the deadline. Returns the fd or -1. */
static int connect_one(int family, const struct sockaddr *addr, socklen_t len,
                       long long deadline, struct daemon *d)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err = 0;
    socklen_t elen = sizeof err;

    if (fd < 0) {
        snprintf(d->why, sizeof d->why, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, addr, len) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EINTR) {
        snprintf(d->why, sizeof d->why, "cannot connect: %s", strerror(errno));
        close(fd);
        return -1;
    }
    switch (wait_for(fd, POLLOUT, deadline)) {
    case 1:
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)
            return fd;
        snprintf(d->why, sizeof d->why, "cannot connect: %s", strerror(err != 0 ? err : errno));
        break;
    case 0:
        snprintf(d->why, sizeof d->why, "cannot connect within %d s", d->timeout);
        break;
    default:
        snprintf(d->why, sizeof d->why, "poll: %s", strerror(errno));
    }
    close(fd);
    return -1;
}

static enum failure connect_daemon(struct daemon *d, long long deadline)
{
    struct addrinfo hints, *res, *ai;
    int err;

    if (d->target.is_unix) {
        d->fd = connect_one(AF_UNIX, (const struct sockaddr *)&d->target.un,
                            sizeof d->target.un, deadline, d);
    } else {
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_NUMERICSERV;
        err = getaddrinfo(d->target.host, d->target.port, &hints, &res);
        if (err != 0) {
            snprintf(d->why, sizeof d->why, "%s", gai_strerror(err));
            return CONNECT;
        }
        for (ai = res; ai != NULL && d->fd < 0; ai = ai->ai_next)
            d->fd = connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, d);
        freeaddrinfo(res);
    }
    if (d->fd < 0)
        return CONNECT;
    if (verbose)
        logmsg(LOG_INFO, "connected to remote-directoryd at %s", d->target.spec);
    return OK;
}

/* A kept connection with something to read between requests was closed by the daemon
   (idle timeout, restart) or is out of step: either way it cannot carry a request. */
static int still_usable(int fd)
{
    struct pollfd p;
    int n;

    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    do
        n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    return n == 0;
}

static enum failure send_request(struct daemon *d, const char *buf, size_t len,
                                 long long deadline)
{
    while (len > 0) {
        ssize_t n = send(d->fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = wait_for(d->fd, POLLOUT, deadline);
            if (w == 1)
                continue;
            snprintf(d->why, sizeof d->why, w == 0 ? "no answer within %d s" : "poll failed",
                     d->timeout);
            return TIMEOUT;
        }
        snprintf(d->why, sizeof d->why, "send: %s", strerror(errno));
        return errno == EPIPE || errno == ECONNRESET ? CLOSED : BROKEN;
    }
    return OK;
}

/*
 * Reads one reply: lines up to and including an empty one (a "\r" before "\n" allowed).
 * On OK, reply[0..*len) is the reply as the daemon sent it.
 */
static enum failure read_reply(struct daemon *d, char *reply, size_t *len, long long deadline)
{
    size_t used = 0, line_start = 0;

    for (;;) {
        ssize_t n;
        size_t i;
        int w = wait_for(d->fd, POLLIN, deadline);

        if (w != 1) {
            snprintf(d->why, sizeof d->why, w == 0 ? "no answer within %d s" : "poll failed",
                     d->timeout);
            return TIMEOUT;
        }
        if (used == MAX_REPLY) {
            snprintf(d->why, sizeof d->why, "answer longer than %d bytes", MAX_REPLY);
            return OVERLONG;
        }
        n = recv(d->fd, reply + used, MAX_REPLY - used, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n < 0) {
            snprintf(d->why, sizeof d->why, "recv: %s", strerror(errno));
            return used == 0 && errno == ECONNRESET ? CLOSED : BROKEN;
        }
        if (n == 0) {
            snprintf(d->why, sizeof d->why, "closed the connection without %s answer",
                     used == 0 ? "an" : "a whole");
            return used == 0 ? CLOSED : BROKEN;
        }
        for (i = used; i < used + (size_t)n; i++) {
            size_t line_len;
            if (reply[i] != '\n')
                continue;
            line_len = i - line_start;
            if (line_len > 0 && reply[i - 1] == '\r')
                line_len--;
            line_start = i + 1;
            if (line_len == 0) {
                if (line_start != used + (size_t)n) {
                    /* More than one answer to one request: no later answer can be trusted
                       to belong to its request. This one is complete; the connection goes. */
                    snprintf(d->why, sizeof d->why, "sent more than one answer");
                    *len = line_start;
                    return BROKEN;
                }
                *len = line_start;
                return OK;
            }
        }
        used += (size_t)n;
    }
}

/*
 * The daemon's answer to one request into reply (MAX_REPLY bytes), or DEFER when there is
 * none; returns its length.
 */
static size_t ask(struct daemon *d, const char *request, size_t request_len, char *reply)
{
    long long deadline = now_ms() + (long long)d->timeout * 1000;
    int attempt;

    for (attempt = 0; attempt < 2; attempt++) {
        enum failure f;
        size_t len = 0;
        int reused = d->fd >= 0;

        if (reused && !still_usable(d->fd)) {
            if (verbose)
                logmsg(LOG_INFO, "remote-directoryd at %s closed the idle connection; "
                                 "connecting again", d->target.spec);
            disconnect(d);
            reused = 0;
        }
        f = reused ? OK : connect_daemon(d, deadline);
        if (f == OK)
            f = send_request(d, request, request_len, deadline);
        if (f == OK)
            f = read_reply(d, reply, &len, deadline);
        if (f == OK)
            return len;
        disconnect(d);
        if (f == BROKEN && len > 0) {
            /* A whole answer followed by stray bytes: the answer stands. */
            logmsg(LOG_WARNING, "remote-directoryd at %s: %s; connection closed",
                   d->target.spec, d->why);
            return len;
        }
        if (f == CLOSED && reused) {
            if (verbose)
                logmsg(LOG_INFO, "remote-directoryd at %s: %s on a kept connection; "
                                 "asking again on a new one", d->target.spec, d->why);
            continue;
        }
        break;
    }
    logmsg(LOG_WARNING, "remote-directoryd at %s: %s; answered DEFER_IF_PERMIT",
           d->target.spec, d->why);
    memcpy(reply, DEFER, sizeof DEFER - 1);
    return sizeof DEFER - 1;
}

/* ---- Postfix's side: standard input and output ---------------------------------------- */

struct reader {
    int fd;
    char buf[8192];
    size_t start, end;
};

enum got { REQUEST, END, END_IN_REQUEST, LINE_TOO_LONG, REQUEST_TOO_LONG, READ_ERROR };

/* The next request, up to and including its empty line, into request[MAX_REQUEST]. */
static enum got read_request(struct reader *rd, char *request, size_t *len)
{
    size_t used = 0, line = 0; /* line: bytes of the current line so far */

    for (;;) {
        while (rd->start < rd->end) {
            char c = rd->buf[rd->start++];
            if (used == MAX_REQUEST)
                return REQUEST_TOO_LONG;
            request[used++] = c;
            if (c != '\n') {
                if (++line > MAX_LINE + 1) /* room for one '\r' before '\n' */
                    return LINE_TOO_LONG;
                continue;
            }
            if (line > 0 && request[used - 2] == '\r')
                line--;
            if (line > MAX_LINE)
                return LINE_TOO_LONG;
            if (line == 0) {
                *len = used;
                return REQUEST;
            }
            line = 0;
        }
        {
            ssize_t n = read(rd->fd, rd->buf, sizeof rd->buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                logmsg(LOG_ERR, "reading the request: %s", strerror(errno));
                return READ_ERROR;
            }
            if (n == 0)
                return used == 0 ? END : END_IN_REQUEST;
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

static int relay(struct daemon *d)
{
    static struct reader rd;
    static char request[MAX_REQUEST], reply[MAX_REPLY];

    rd.fd = STDIN_FILENO;
    for (;;) {
        size_t request_len = 0, reply_len;

        switch (read_request(&rd, request, &request_len)) {
        case REQUEST:
            break;
        case END:
            return 0;
        case END_IN_REQUEST:
            logmsg(LOG_WARNING, "end of input within a request; nothing answered");
            return 0;
        case LINE_TOO_LONG:
            logmsg(LOG_ERR, "malformed request: line longer than %d bytes; closing", MAX_LINE);
            return EXIT_DATAERR;
        case REQUEST_TOO_LONG:
            logmsg(LOG_ERR, "malformed request: longer than %d bytes; closing", MAX_REQUEST);
            return EXIT_DATAERR;
        case READ_ERROR:
            return EXIT_IOERR;
        }
        reply_len = ask(d, request, request_len, reply);
        if (verbose) {
            const char *eol = memchr(reply, '\n', reply_len);
            int shown = (int)(eol - reply);
            if (shown > 0 && reply[shown - 1] == '\r')
                shown--;
            logmsg(LOG_INFO, "answer: %.*s", shown, reply);
        }
        if (write_all(STDOUT_FILENO, reply, reply_len) != 0) {
            logmsg(LOG_WARNING, "cannot send the answer: %s", strerror(errno));
            return EXIT_IOERR;
        }
    }
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
            "usage: policy-remote-directory [-s SOCKET] [-t SECONDS] [-v] [-S]\n"
            "  Relays Postfix policy requests on stdin/stdout (spawn(8)) to remote-directoryd,\n"
            "  whose policy service decides.\n"
            "  -s SOCKET   the daemon's daemon.policy.socket (a path) or daemon.policy.listen\n"
            "              (HOST:PORT); default " DEFAULT_SOCKET "\n"
            "  -t SECONDS  longest wait for the daemon's answer, then DEFER_IF_PERMIT\n"
            "              (default %d)\n"
            "  -v          log every answer and connection\n"
            "  -S          log to syslog (automatic when stderr is the client socket)\n",
            DEFAULT_TIMEOUT);
    return message != NULL ? EXIT_USAGE : 0;
}

/* The options of the earlier stand-alone program, whose jobs the daemon now does. */
static int gone(int opt)
{
    return usage(opt == 'l'
                     ? "-l is gone: remote-directoryd listens itself (daemon.policy.listen); "
                       "point check_policy_service there"
                     : "-c and -d are gone: remote-directoryd reads the configuration and its "
                       "daemon.policy.directory names the directory; point -s at its "
                       "daemon.policy.socket");
}

int main(int argc, char **argv)
{
    static struct daemon d;
    const char *socket_spec = DEFAULT_SOCKET;
    int opt;

    d.timeout = DEFAULT_TIMEOUT;
    d.fd = -1;
    if (argc > 1 && strcmp(argv[1], "--help") == 0)
        return usage(NULL);
    opterr = 0;
    while ((opt = getopt(argc, argv, "s:t:c:d:l:vSh")) != -1) {
        char *end;
        long t;

        switch (opt) {
        case 's': socket_spec = optarg; break;
        case 't':
            errno = 0;
            t = strtol(optarg, &end, 10);
            if (errno != 0 || *end != '\0' || t < 1 || t > MAX_TIMEOUT)
                return usage("-t wants a number of seconds from 1 to 3600");
            d.timeout = (int)t;
            break;
        case 'c':
        case 'd':
        case 'l':
            return gone(opt);
        case 'v': verbose = 1; break;
        case 'S': use_syslog = 1; break;
        case 'h': return usage(NULL);
        default:
            if (optopt == 'c' || optopt == 'd' || optopt == 'l')
                return gone(optopt);
            return usage(optopt == 's' || optopt == 't' ? "option needs an argument"
                                                        : "unknown option");
        }
    }
    if (optind < argc)
        return usage("unexpected argument");
    if (parse_target(socket_spec, &d.target) != 0)
        return usage("-s wants a Unix socket path (shorter than 108 bytes) or HOST:PORT "
                     "([IPv6]:PORT)");
    if (stderr_is_the_client())
        use_syslog = 1;
    if (use_syslog)
        openlog("policy-remote-directory", LOG_PID, LOG_MAIL);
    /* A client or a daemon that goes away must not kill the relay with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    opt = relay(&d);
    disconnect(&d);
    return opt;
}
