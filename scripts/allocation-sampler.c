/*
 * An LD_PRELOAD allocation sampler for `scripts/allocations.sh`: counts the allocations (malloc, calloc, realloc,
 * posix_memalign) of the threads whose name contains SAMPLER_THREAD, sampling one in eight at random with its call
 * stack. Allocation counts repeat exactly from run to run, where CPU time on a shared machine does not.
 *
 * The first SIGUSR2 starts counting, the second writes SAMPLER_OUT/stacks.txt ("count address..." per call stack,
 * sampled) and SAMPLER_OUT/maps.txt (the process's mappings, to symbolise the addresses).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEPTH 10
#define SLOTS 8192

struct stack {
        void *frames[DEPTH];
        long count;
};

static struct stack stacks[SLOTS];
static pthread_mutex_t stacks_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int counting;
/* -1: not known yet; 0: not sampled; 1: sampled. A thread is classified once it has a name of its own. */
static __thread int sampled_thread = -1;
static __thread int inside;
static __thread unsigned long random_state;
/* Allocations made while dlsym looks up the real functions. */
static char early[65536];
static size_t early_used;

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void (*real_free)(void *);

static int is_sampled_thread(void) {
        if (sampled_thread >= 0)
                return sampled_thread;
        char name[32] = {0};
        pthread_getname_np(pthread_self(), name, sizeof name);
        if (!strncmp(name, program_invocation_short_name, 15))
                return 0; /* not named yet */
        const char *wanted = getenv("SAMPLER_THREAD");
        sampled_thread = strstr(name, wanted ? wanted : "default-qos") != NULL;
        return sampled_thread;
}

static void sample(void) {
        if (inside || !counting)
                return;
        inside = 1;
        random_state = random_state * 6364136223846793005UL + 1442695040888963407UL;
        if (is_sampled_thread() && (random_state >> 61) == 0) {
                void *frames[DEPTH + 2];
                int depth = backtrace(frames, DEPTH + 2);
                struct stack found = {0};
                for (int i = 2; i < depth && i - 2 < DEPTH; i++)
                        found.frames[i - 2] = frames[i];
                unsigned long hash = 0;
                for (int i = 0; i < DEPTH; i++)
                        hash = hash * 31 + (unsigned long)found.frames[i];
                pthread_mutex_lock(&stacks_lock);
                for (int probe = 0; probe < SLOTS; probe++) {
                        struct stack *slot = &stacks[(hash + probe) % SLOTS];
                        if (slot->count == 0) {
                                *slot = found;
                                slot->count = 1;
                                break;
                        }
                        if (!memcmp(slot->frames, found.frames, sizeof found.frames)) {
                                slot->count++;
                                break;
                        }
                }
                pthread_mutex_unlock(&stacks_lock);
        }
        inside = 0;
}

static void *early_allocation(size_t size) {
        void *block = early + early_used;
        early_used += (size + 15) & ~(size_t)15;
        return early_used <= sizeof early ? block : NULL;
}

void *malloc(size_t size) {
        if (!real_malloc && !(real_malloc = dlsym(RTLD_NEXT, "malloc")))
                return early_allocation(size);
        sample();
        return real_malloc(size);
}

void *calloc(size_t count, size_t size) {
        if (!real_calloc && !(real_calloc = dlsym(RTLD_NEXT, "calloc")))
                return early_allocation(count * size); /* static memory is zeroed */
        sample();
        return real_calloc(count, size);
}

void *realloc(void *block, size_t size) {
        if (!real_realloc)
                real_realloc = dlsym(RTLD_NEXT, "realloc");
        sample();
        return real_realloc(block, size);
}

int posix_memalign(void **block, size_t alignment, size_t size) {
        if (!real_posix_memalign)
                real_posix_memalign = dlsym(RTLD_NEXT, "posix_memalign");
        sample();
        return real_posix_memalign(block, alignment, size);
}

void free(void *block) {
        if ((char *)block >= early && (char *)block < early + sizeof early)
                return;
        if (!real_free)
                real_free = dlsym(RTLD_NEXT, "free");
        real_free(block);
}

static void copy_file(const char *from, const char *to) {
        int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        char buffer[4096];
        ssize_t got;
        while (in >= 0 && out >= 0 && (got = read(in, buffer, sizeof buffer)) > 0)
                if (write(out, buffer, (size_t)got) != got)
                        break;
        if (in >= 0)
                close(in);
        if (out >= 0)
                close(out);
}

static void on_signal(int signal) {
        (void)signal;
        if (!counting) {
                counting = 1;
                return;
        }
        counting = 0;
        const char *directory = getenv("SAMPLER_OUT") ? getenv("SAMPLER_OUT") : "/tmp";
        char path[4096];
        snprintf(path, sizeof path, "%s/stacks.txt", directory);
        FILE *out = fopen(path, "w");
        if (!out)
                return;
        for (int i = 0; i < SLOTS; i++) {
                if (!stacks[i].count)
                        continue;
                fprintf(out, "%ld", stacks[i].count);
                for (int j = 0; j < DEPTH; j++)
                        fprintf(out, " %p", stacks[i].frames[j]);
                fprintf(out, "\n");
        }
        fclose(out);
        snprintf(path, sizeof path, "%s/maps.txt", directory);
        copy_file("/proc/self/maps", path);
}

__attribute__((constructor)) static void start(void) {
        void *frames[2];
        backtrace(frames, 2); /* loads the unwinder now, not inside a sampled malloc */
        struct sigaction action = {0};
        action.sa_handler = on_signal;
        action.sa_flags = SA_RESTART;
        sigaction(SIGUSR2, &action, NULL);
}
