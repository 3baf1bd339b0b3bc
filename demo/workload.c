/*
 * The bundled demo workload for `make demo`: a small "log indexer" that does three kinds of
 * CPU work a profiler should tell apart — formatting records (snprintf in libc), hashing
 * them, and sorting them with qsort, which calls back into our comparator. Two worker
 * threads run the pipeline; the main thread checks progress. It is built without frame
 * pointers, like most distribution binaries, so its stacks need DWARF unwinding.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORDS 20000
#define LINE 64

struct record {
    uint64_t hash;
    char line[LINE];
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

__attribute__((noinline)) static void format_records(struct record *r, int n, unsigned seed) {
    for (int i = 0; i < n; i++)
        snprintf(r[i].line, LINE, "%u GET /item/%d status=%d bytes=%d", seed + i, (i * 7919) % 100000,
                 200 + (i % 5), (i * 31) % 65536);
}

static inline uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    while (*s) {
        h ^= (unsigned char)*s++;
        h *= 1099511628211ULL;
    }
    return h;
}

__attribute__((noinline)) static void hash_records(struct record *r, int n) {
    for (int round = 0; round < 8; round++)
        for (int i = 0; i < n; i++)
            r[i].hash ^= fnv1a(r[i].line) + round;
}

static int by_hash(const void *a, const void *b) {
    const struct record *x = a, *y = b;
    return (x->hash > y->hash) - (x->hash < y->hash);
}

__attribute__((noinline)) static void sort_records(struct record *r, int n) {
    qsort(r, n, sizeof *r, by_hash);
}

static double deadline;

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg;
    struct record *r = calloc(RECORDS, sizeof *r);
    if (!r)
        return NULL;
    while (now() < deadline) {
        format_records(r, RECORDS, seed);
        hash_records(r, RECORDS);
        sort_records(r, RECORDS);
        seed += RECORDS;
    }
    free(r);
    return NULL;
}

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    deadline = now() + secs;
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)(i * 1000003));
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("demo workload done after %.1f s\n", secs);
    return 0;
}
