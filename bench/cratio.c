/* cratio: fixed-work CPU benchmark for sprofd (bench/run.sh).
 *
 * The work is split 75/25 between two three-level call chains:
 *   main -> a1 -> a2 -> a3_hot  -> work   (3 chunks of every 4)
 *   main -> b1 -> b2 -> b3_cold -> work   (1 chunk of every 4)
 * Every function is noinline, noclone and built without sibling-call
 * optimisation, so each level is a real frame; `sink` is volatile so the
 * work cannot be folded away. The amount of work is fixed (not the time).
 *
 * usage: cratio [THREADS [SCALE]]
 *   THREADS  worker threads, each doing the full work (default 1: run on the
 *            main thread, no pthreads involved)
 *   SCALE    multiplies the work (default 1.0, fractions allowed)
 * prints "elapsed <seconds>" (CLOCK_MONOTONIC around the work) on stdout.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NOINL __attribute__((noinline, noclone, optimize("no-optimize-sibling-calls")))

/* one chunk = CHUNK LCG steps (~0.1 ms); ROUNDS rounds of 4 chunks at SCALE 1 */
#define CHUNK 100000UL
#define ROUNDS 4000UL

volatile unsigned long sink;

NOINL unsigned long work(unsigned long n)
{
	unsigned long x = sink;
	for (unsigned long i = 0; i < n; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	sink = x;
	return x;
}

NOINL unsigned long a3_hot(unsigned long n) { return work(n) + 1; }
NOINL unsigned long a2(unsigned long n) { return a3_hot(n) + 1; }
NOINL unsigned long a1(unsigned long n) { return a2(n) + 1; }

NOINL unsigned long b3_cold(unsigned long n) { return work(n) + 1; }
NOINL unsigned long b2(unsigned long n) { return b3_cold(n) + 1; }
NOINL unsigned long b1(unsigned long n) { return b2(n) + 1; }

static unsigned long rounds;

static inline __attribute__((always_inline)) void run(void)
{
	for (unsigned long r = 0; r < rounds; r++) {
		sink += a1(CHUNK);
		sink += a1(CHUNK);
		sink += a1(CHUNK);
		sink += b1(CHUNK);
	}
}

static void *thread_main(void *arg)
{
	(void)arg;
	run();
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = argc > 1 ? atoi(argv[1]) : 1;
	double scale = argc > 2 ? atof(argv[2]) : 1.0;
	struct timespec t0, t1;

	if (threads < 1 || threads > 256 || scale <= 0) {
		fprintf(stderr, "usage: cratio [THREADS [SCALE]]\n");
		return 2;
	}
	rounds = (unsigned long)(ROUNDS * scale);
	if (rounds == 0)
		rounds = 1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (threads == 1) {
		run();
	} else {
		pthread_t tid[256];
		for (int i = 0; i < threads; i++)
			if (pthread_create(&tid[i], NULL, thread_main, NULL) != 0) {
				perror("pthread_create");
				return 1;
			}
		for (int i = 0; i < threads; i++)
			pthread_join(tid[i], NULL);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("elapsed %.6f\n", (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
