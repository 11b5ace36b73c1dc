/* Keeps the admin key off tritonserver's command line (issue 20).
 *
 * Triton 2.51 takes the restricted-API key only as an argument (--http-restricted-api=<apis>:<header>=<key>,
 * --grpc-restricted-protocol=...; src/command_line_parser.cc reads no file and no environment variable
 * for it), and /proc/<pid>/cmdline is readable by every local user. So the launcher passes
 *     --http-restricted-api=<apis>:dllm-admin-key@DLLM_ADMIN_KEY
 * and the key in the environment variable DLLM_ADMIN_KEY (/proc/<pid>/environ is readable by the
 * process's owner only), and preloads this library (LD_PRELOAD). Its constructor runs before main():
 * glibc passes constructors the argv array that main() will receive, so pointing an element at a heap
 * string "<apis>:dllm-admin-key=<key>" gives Triton the key while /proc/<pid>/cmdline, which reads the
 * original argument memory, still shows the placeholder.
 *
 * Fail closed: without this library "@DLLM_ADMIN_KEY" is no "<header>=<value>" pair and Triton refuses
 * the option and exits (it never runs with a placeholder as the key); with it, a placeholder but no
 * usable key stops the process here. The variable is then wiped from the original environment memory
 * (so /proc/<pid>/environ no longer holds it either) and removed from the environment, and this
 * library from LD_PRELOAD, so that the Python-backend stubs tritonserver starts inherit neither.
 *
 * Built by backend/serving/admin_key.py (make serve-deps) and by the Dockerfile. glibc only (musl
 * passes constructors no arguments).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_VAR "DLLM_ADMIN_KEY"
#define PLACEHOLDER "@" KEY_VAR
#define MAX_KEY 256

static void fail(const char *why) {
    /* Never print the key or the arguments: the log is read by more people than the key's owner. */
    fprintf(stderr, "dllm admin-key shim: %s\n", why);
    _exit(2);
}

/* The key travels in an HTTP header and in Triton's "<header>=<value>" option: the same characters as
 * backend/serving/admin_key.py allows. */
static int key_is_valid(const char *key) {
    size_t n = strlen(key);
    if (n == 0 || n > MAX_KEY)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '-' || c == '_' || c == '.' || c == '~';
        if (!ok)
            return 0;
    }
    return 1;
}

/* Remove this library's own path from LD_PRELOAD (other preloaded libraries stay), so that the
 * processes tritonserver starts do not load it again. */
static void drop_self_from_preload(void) {
    Dl_info info;
    const char *preload = getenv("LD_PRELOAD");
    if (preload == NULL || !dladdr((void *)drop_self_from_preload, &info) || info.dli_fname == NULL)
        return;
    char *copy = strdup(preload), *kept = calloc(strlen(preload) + 1, 1), *save = NULL;
    if (copy == NULL || kept == NULL)
        fail("out of memory");
    for (char *item = strtok_r(copy, ": ", &save); item != NULL; item = strtok_r(NULL, ": ", &save)) {
        if (strcmp(item, info.dli_fname) == 0)
            continue;
        if (kept[0])
            strcat(kept, ":");
        strcat(kept, item);
    }
    if (kept[0])
        setenv("LD_PRELOAD", kept, 1);
    else
        unsetenv("LD_PRELOAD");
    free(copy);
    free(kept);
}

__attribute__((constructor)) static void fill_in_admin_key(int argc, char **argv, char **envp) {
    (void)envp;
    char key[MAX_KEY + 1] = "";
    int have_key = 0;
    char *value = getenv(KEY_VAR);
    if (value != NULL) {
        size_t n = strlen(value);
        if (n <= MAX_KEY) {
            memcpy(key, value, n + 1);
            have_key = 1;
        }
        memset(value, 0, n); /* the bytes /proc/<pid>/environ shows */
        unsetenv(KEY_VAR);
    }
    drop_self_from_preload();
    for (int i = 1; i < argc && argv != NULL; i++) {
        char *at = strstr(argv[i], PLACEHOLDER);
        if (at == NULL)
            continue;
        if (!have_key || !key_is_valid(key))
            fail(KEY_VAR " is missing or not 1-256 of the characters A-Z a-z 0-9 - _ . ~");
        size_t head = (size_t)(at - argv[i]), tail = strlen(at + strlen(PLACEHOLDER));
        char *filled = malloc(head + 1 + strlen(key) + tail + 1);
        if (filled == NULL)
            fail("out of memory");
        memcpy(filled, argv[i], head);
        filled[head] = '=';
        strcpy(filled + head + 1, key);
        strcat(filled, at + strlen(PLACEHOLDER));
        argv[i] = filled; /* main() reads this; the original string (and so /proc/<pid>/cmdline) is unchanged */
    }
    memset(key, 0, sizeof key);
}
