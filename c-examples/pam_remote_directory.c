/*
 * pam_remote_directory.so -- PAM authentication against a remote IMAP, SMTP
 * or LMTP server through remote-directory.
 *
 *   auth required pam_remote_directory.so [config=PATH] [directory=NAME]
 *                                          [debug] [use_first_pass|try_first_pass]
 *
 * config=PATH     configuration file (default /etc/remote-directory.toml)
 * directory=NAME  which [directory.NAME] to use (needed when there are several)
 * debug           log each decision at LOG_DEBUG
 * use_first_pass  only use the password an earlier module in the stack got;
 *                 fail if there is none
 * try_first_pass  use that password if there is one, else prompt (this is
 *                 also what happens without either option: pam_get_authtok)
 *
 * Results: OK -> PAM_SUCCESS; REJECTED, INVALID_INPUT -> PAM_AUTH_ERR;
 * TEMPORARY -> PAM_AUTHINFO_UNAVAIL; UNSUPPORTED, CONFIG, INTERNAL ->
 * PAM_SERVICE_ERR. Unknown module options are PAM_SERVICE_ERR too: a typo in
 * the service file must not silently fall back to defaults.
 *
 * The library (libremote_directory.a) is linked in statically and its
 * symbols are hidden, so the module exports only pam_sm_authenticate and
 * pam_sm_setcred and does not clash with anything the application loads.
 *
 * The client's address: PAM_RHOST, when the application set it to an IPv4 or
 * IPv6 address (sshd, saslauthd -r, Dovecot's PAM passdb do), is passed to
 * directory_auth_from, for throttle.client and forward.client-ip. A host name
 * there is not an address: the login is then checked as from an unknown client.
 *
 * Messages go to pam_syslog(3). The password is never logged, copied or
 * freed here: it belongs to libpam (the PAM_AUTHTOK item), which wipes it.
 */
#define _DEFAULT_SOURCE
#include <arpa/inet.h>
#include <stdarg.h>
#include <string.h>
#include <syslog.h>

#include <security/pam_modules.h>
#include <security/pam_ext.h>

#include "remote_directory.h"

#define DEFAULT_CONFIG "/etc/remote-directory.toml"

struct options {
    const char *config;
    const char *directory;
    int debug;
    int use_first_pass;
};

static int parse_options(pam_handle_t *pamh, int argc, const char **argv,
                         struct options *opt)
{
    int i;

    opt->config = DEFAULT_CONFIG;
    opt->directory = NULL;
    opt->debug = 0;
    opt->use_first_pass = 0;
    for (i = 0; i < argc; i++) {
        if (strncmp(argv[i], "config=", 7) == 0 && argv[i][7] != '\0')
            opt->config = argv[i] + 7;
        else if (strncmp(argv[i], "directory=", 10) == 0 && argv[i][10] != '\0')
            opt->directory = argv[i] + 10;
        else if (strcmp(argv[i], "debug") == 0)
            opt->debug = 1;
        else if (strcmp(argv[i], "use_first_pass") == 0)
            opt->use_first_pass = 1;
        else if (strcmp(argv[i], "try_first_pass") == 0)
            ; /* the default of pam_get_authtok(3) */
        else {
            pam_syslog(pamh, LOG_ERR, "unknown or empty option \"%s\"", argv[i]);
            return PAM_SERVICE_ERR;
        }
    }
    return PAM_SUCCESS;
}

static int to_pam(directory_result r)
{
    switch (r) {
    case DIRECTORY_RESULT_OK:
        return PAM_SUCCESS;
    case DIRECTORY_RESULT_REJECTED:
    case DIRECTORY_RESULT_INVALID_INPUT:
        return PAM_AUTH_ERR;
    case DIRECTORY_RESULT_TEMPORARY:
        return PAM_AUTHINFO_UNAVAIL;
    default: /* UNSUPPORTED, CONFIG, INTERNAL and any value added later */
        return PAM_SERVICE_ERR;
    }
}

/* PAM_RHOST if it is an IP address; NULL (unknown) otherwise. */
static const char *client_address(pam_handle_t *pamh)
{
    const void *item = NULL;
    unsigned char buf[sizeof(struct in6_addr)];

    if (pam_get_item(pamh, PAM_RHOST, &item) != PAM_SUCCESS || item == NULL)
        return NULL;
    if (inet_pton(AF_INET, item, buf) == 1 || inet_pton(AF_INET6, item, buf) == 1)
        return item;
    return NULL;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc,
                                   const char **argv)
{
    struct options opt;
    const char *user = NULL;
    const void *item = NULL;
    const char *password = NULL;
    directory *dir = NULL;
    directory_result r;
    int rc;

    (void)flags;
    rc = parse_options(pamh, argc, argv, &opt);
    if (rc != PAM_SUCCESS)
        return rc;

    rc = pam_get_user(pamh, &user, NULL);
    if (rc == PAM_CONV_AGAIN)
        return PAM_INCOMPLETE;
    if (rc != PAM_SUCCESS) {
        pam_syslog(pamh, LOG_NOTICE, "cannot determine the user name: %s",
                   pam_strerror(pamh, rc));
        return rc;
    }
    if (user == NULL || *user == '\0') {
        pam_syslog(pamh, LOG_NOTICE, "empty user name");
        return PAM_USER_UNKNOWN;
    }

    if (opt.use_first_pass) {
        rc = pam_get_item(pamh, PAM_AUTHTOK, &item);
        if (rc != PAM_SUCCESS || item == NULL) {
            pam_syslog(pamh, LOG_NOTICE,
                       "use_first_pass: no password from an earlier module for %s", user);
            return PAM_AUTH_ERR;
        }
        password = item;
    } else {
        rc = pam_get_authtok(pamh, PAM_AUTHTOK, &password, NULL);
        if (rc == PAM_CONV_AGAIN)
            return PAM_INCOMPLETE;
        if (rc != PAM_SUCCESS || password == NULL) {
            pam_syslog(pamh, LOG_NOTICE, "cannot get the password for %s: %s", user,
                       pam_strerror(pamh, rc));
            return rc != PAM_SUCCESS ? rc : PAM_AUTH_ERR;
        }
    }

    /*
     * The handle is opened and closed within this call. A PAM module cannot
     * safely keep one across calls: the application may pam_end() and
     * dlclose() the module at any time, fork between calls, load the module
     * for several services with different options, or run several PAM
     * transactions on different threads. So each authentication pays for
     * reading the configuration and a fresh connection; a service that
     * authenticates at a high rate should link the library and keep one handle.
     */
    r = directory_open(opt.config, opt.directory, &dir);
    if (r != DIRECTORY_RESULT_OK) {
        pam_syslog(pamh, LOG_ERR, "cannot open directory %s in %s: %s: %s",
                   opt.directory ? opt.directory : "(the only one)", opt.config,
                   directory_result_name(r), directory_last_error());
        return to_pam(r);
    }

    r = directory_auth_from(dir, user, password, client_address(pamh));
    switch (r) {
    case DIRECTORY_RESULT_OK:
        if (opt.debug)
            pam_syslog(pamh, LOG_DEBUG, "password accepted for %s", user);
        break;
    case DIRECTORY_RESULT_REJECTED:
    case DIRECTORY_RESULT_INVALID_INPUT:
        pam_syslog(pamh, LOG_NOTICE, "authentication failure for %s: %s: %s", user,
                   directory_result_name(r), directory_last_error());
        break;
    default:
        pam_syslog(pamh, LOG_ERR, "cannot check the password of %s: %s: %s", user,
                   directory_result_name(r), directory_last_error());
        break;
    }
    if (opt.debug)
        pam_syslog(pamh, LOG_DEBUG, "directory_auth(%s) = %s -> %s", user,
                   directory_result_name(r), pam_strerror(pamh, to_pam(r)));
    directory_close(dir);
    return to_pam(r);
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc,
                              const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
