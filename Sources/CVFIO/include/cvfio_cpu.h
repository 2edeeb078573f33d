#ifndef CVFIO_CPU_H
#define CVFIO_CPU_H
/* The bench's CPU brackets, shared as source by this tool (through cvfio_ioctl) and
 * bench/map_bench.c, so both sides time the kernel's share of an ioctl with the same code.
 * A bracket reads CLOCK_THREAD_CPUTIME_ID right before and right after the ioctl: what lies
 * between is the ioctl (libc's stub, syscall entry, the kernel's work, exit) plus the tail of
 * the first read and the head of the second. An empty bracket, the two reads with nothing
 * between, measures that remainder; cvfio_bracket_calibrate times it in the same run. */
#include <stdint.h>
#include <time.h>
#include <sys/ioctl.h>

/* Empty brackets per calibration, on both sides. */
#define CVFIO_CALIBRATION_BRACKETS 256

struct cvfio_bracket {
    /* CPU ns inside the brackets and how many were taken. */
    uint64_t inside_ns;
    uint64_t calls;
};

static inline uint64_t cvfio_clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t cvfio_thread_cpu_ns(void) { return cvfio_clock_ns(CLOCK_THREAD_CPUTIME_ID); }

static inline int cvfio_bracketed_ioctl(struct cvfio_bracket *b, int fd, unsigned long request, void *arg) {
    uint64_t k0 = cvfio_thread_cpu_ns();
    int r = ioctl(fd, request, arg);
    uint64_t k1 = cvfio_thread_cpu_ns();
    b->inside_ns += k1 - k0;
    b->calls++;
    return r;
}

struct cvfio_bracket_cost {
    /* Medians over the calibration, ns: CPU time inside one empty bracket, and from one empty
     * bracket's first read to the next one's (both reads entirely: what bracketing adds to a
     * call). Medians, because a tick or an interrupt inside one of them (or, under TCG, the
     * host descheduling the vCPU) would otherwise be charged to every call. */
    uint64_t inside_ns;
    uint64_t whole_ns;
    uint64_t n;
};

static inline uint64_t cvfio_median_u64(uint64_t *v, uint64_t n) {
    for (uint64_t i = 1; i < n; i++) {  /* insertion sort: n is CVFIO_CALIBRATION_BRACKETS */
        uint64_t x = v[i], j = i;
        while (j > 0 && v[j - 1] > x) { v[j] = v[j - 1]; j--; }
        v[j] = x;
    }
    return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* CVFIO_CALIBRATION_BRACKETS empty brackets, laid out as cvfio_bracketed_ioctl lays out a real one. */
static inline struct cvfio_bracket_cost cvfio_bracket_calibrate(void) {
    enum { N = CVFIO_CALIBRATION_BRACKETS };
    uint64_t inside[N], whole[N], start[N + 1];
    for (int i = 0; i < N; i++) {
        uint64_t k0 = cvfio_thread_cpu_ns();
        __asm__ __volatile__("" ::: "memory");
        uint64_t k1 = cvfio_thread_cpu_ns();
        start[i] = k0;
        inside[i] = k1 - k0;
    }
    start[N] = cvfio_thread_cpu_ns();
    for (int i = 0; i < N; i++) whole[i] = start[i + 1] - start[i];
    struct cvfio_bracket_cost c = {cvfio_median_u64(inside, N), cvfio_median_u64(whole, N), N};
    return c;
}

/* This thread's bracket for cvfio_ioctl: while set, every ioctl the tool makes is bracketed
 * into it. NULL (the default) turns bracketing off. */
void cvfio_bracket_set(struct cvfio_bracket *b);

#endif
