/*
 * Guest side of tests/tests/vt/clock.rs: reads every clock through the vDSO (glibc's
 * clock_gettime, gettimeofday and time) and through the syscall, back to back, and prints
 * what it saw, one line per comparison:
 *
 *   clock ID RC_V1 RC_V2 RC_S RC_V3 V1 V2 S V3   (vDSO, vDSO, syscall, vDSO; nanoseconds)
 *   tod RC_V1 RC_S RC_V2 V1 S V2                 (gettimeofday; microseconds)
 *   time V1 S V2                                 (time; seconds)
 *
 * Between rounds it sleeps (so the timekeeper's tick updates come between reads), changes
 * the clock's frequency with adjtimex (so the timekeeper's multiplier changes) and steps the
 * wall clock with clock_settime (so its offsets change). Usage: clock_compare ROUNDS.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *t)
{
	return t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long us(const struct timeval *t)
{
	return t->tv_sec * 1000000LL + t->tv_usec;
}

static void compare_clocks(void)
{
	for (int id = 0; id < 12; id++) {
		struct timespec v1 = {0}, v2 = {0}, s = {0}, v3 = {0};
		int r1 = clock_gettime(id, &v1);
		int r2 = clock_gettime(id, &v2);
		long rs = syscall(SYS_clock_gettime, id, &s);
		int r3 = clock_gettime(id, &v3);

		printf("clock %d %d %d %ld %d %lld %lld %lld %lld\n", id, r1, r2, rs, r3,
		       ns(&v1), ns(&v2), ns(&s), ns(&v3));
	}
	struct timeval t1, ts, t2;
	int g1 = gettimeofday(&t1, NULL);
	long gs = syscall(SYS_gettimeofday, &ts, NULL);
	int g2 = gettimeofday(&t2, NULL);

	printf("tod %d %ld %d %lld %lld %lld\n", g1, gs, g2, us(&t1), us(&ts), us(&t2));
	time_t a = time(NULL);
	long b = syscall(SYS_time, NULL);
	time_t c = time(NULL);

	printf("time %ld %ld %ld\n", (long)a, b, (long)c);
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 1;

	for (int r = 0; r < rounds; r++) {
		compare_clocks();
		if (r == rounds / 3) {
			/* +250 ppm: the timekeeper adjusts its multiplier over the next ticks */
			struct timex tx = { .modes = ADJ_FREQUENCY, .freq = 250 << 16 };

			if (adjtimex(&tx) < 0)
				perror("adjtimex");
		}
		if (r == 2 * rounds / 3) {
			struct timespec now;

			clock_gettime(CLOCK_REALTIME, &now);
			now.tv_sec += 3600;
			now.tv_nsec = 123456789;
			if (clock_settime(CLOCK_REALTIME, &now) < 0)
				perror("clock_settime");
		}
		/* 0.7 ms, then growing: within a tick, across ticks, across seconds */
		struct timespec nap = { .tv_sec = r / 10, .tv_nsec = 700000 + 3700000L * (r % 10) };

		nanosleep(&nap, NULL);
	}
	return 0;
}
