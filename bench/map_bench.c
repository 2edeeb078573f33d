/*
 * map_bench — the bench's anon-private map/unmap loop in plain C, with nothing of the tool
 * around it, so `vfio-exerciser bench --c-helper` can put the Swift path's per-call cost next
 * to the bare ioctl's (the tool's own overhead). Same steps as the Swift side
 * (Sources/Exerciser/BenchRunner.swift): per size one MAP_PRIVATE|MAP_ANONYMOUS region,
 * touched with one write per page, placed at the same offset modulo 2 MiB as the Swift run's
 * region (so transparent huge pages cover it alike), then W warm-up and up to N timed
 * VFIO_IOMMU_MAP_DMA + VFIO_IOMMU_UNMAP_DMA pairs at one IOVA, each call timed alone with
 * CLOCK_MONOTONIC; the loop stops early once it has M samples and has run for B seconds.
 * Each timed ioctl is bracketed by CLOCK_THREAD_CPUTIME_ID reads (Sources/CVFIO/include/cvfio_cpu.h,
 * the same code the tool's own ioctls go through), after a calibration of empty brackets; around
 * the timed pairs the thread's CPU time as a whole, and getrusage(RUSAGE_THREAD) as a cross-check
 * (its user/system split is sampled by the tick).
 *
 *   map_bench --device BDF [--backend B]... --size BYTES[@OFFSET]...
 *             [--reps N] [--warmup W] [--min-reps M] [--budget B] [--iova ADDR]
 *
 * B is type1, type1v2 (/dev/vfio/vfio) or iommufd-compat-type1[v2] (/dev/iommu as the container).
 * Prints one JSON object on stdout (schema vfio-exerciser-map-bench/1): raw samples in ns per
 * point; the caller computes the statistics, with the same code as for its own samples.
 * Exit 0 when it measured (points may still carry an error), 2 on a usage or setup problem.
 * Build: bench/build.sh (gcc -O2 -static), or let `vfio-exerciser bench --vm` build it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#include "cvfio_cpu.h"

#define MAX_SIZES 64
#define MAX_REPS 100000
#define HUGE_2M (2UL << 20)

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* This thread's CPU time, µs: user and system (tick-sampled split) and their exact total. */
static void thread_cpu(double *user, double *sys, double *total) {
    struct rusage ru;
    struct timespec ts;
    getrusage(RUSAGE_THREAD, &ru);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    *user = ru.ru_utime.tv_sec * 1e6 + ru.ru_utime.tv_usec;
    *sys = ru.ru_stime.tv_sec * 1e6 + ru.ru_stime.tv_usec;
    *total = ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void die(const char *msg) {
    fprintf(stderr, "map_bench: %s\n", msg);
    exit(2);
}

static int parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

/* errno name for the JSON (the Swift side prints symbols, not strerror text). */
static const char *errname(int e) {
    switch (e) {
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case ENOMEM: return "ENOMEM";
    case EEXIST: return "EEXIST";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ENODEV: return "ENODEV";
    case EACCES: return "EACCES";
    case ENOSPC: return "ENOSPC";
    default: return NULL;
    }
}

static void print_err(const char *what, int e) {
    const char *n = errname(e);
    if (n) printf("\"%s: %s\"", what, n);
    else printf("\"%s: E%d\"", what, e);
}

/* AnonHugePages (kB) of the vma holding addr, from /proc/self/smaps; -1 if not found. */
static long anon_huge_kb(uintptr_t addr) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int inside = 0;
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char dash;
        if (sscanf(line, "%lx%c%lx ", &lo, &dash, &hi) == 3 && dash == '-' && strchr(line, ' ') > strchr(line, '-')) {
            if (inside) break;
            inside = addr >= lo && addr < hi;
            continue;
        }
        if (inside && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1) break;
    }
    fclose(f);
    return kb;
}

/* size bytes of private anonymous memory whose address is `offset` past a 2 MiB boundary. */
static void *region(uint64_t size, uint64_t offset) {
    size_t total = size + HUGE_2M;
    char *raw = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uintptr_t base = ((uintptr_t)raw + HUGE_2M - 1) & ~(HUGE_2M - 1);
    base += offset % HUGE_2M;
    if (base + size > (uintptr_t)raw + total) base -= HUGE_2M;
    munmap(raw, total);
    void *p = mmap((void *)base, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p == MAP_FAILED) return NULL;
    long page = sysconf(_SC_PAGESIZE);
    for (uint64_t off = 0; off < size; off += page) ((volatile char *)p)[off] = (char)0xA5;
    return p;
}

static void print_samples(const char *key, const uint64_t *v, int n) {
    printf("\"%s\":[", key);
    for (int i = 0; i < n; i++) printf(i ? ",%llu" : "%llu", (unsigned long long)v[i]);
    printf("]");
}

int main(int argc, char **argv) {
    const char *device = NULL;
    const char *backends[4];
    int nbackends = 0;
    uint64_t sizes[MAX_SIZES], offsets[MAX_SIZES];
    int nsizes = 0;
    uint64_t reps = 10, warmup = 2, min_reps = 3, iova = 1ull << 32;
    double budget = 2.0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            printf("usage: map_bench --device BDF [--backend type1|type1v2|iommufd-compat-type1|iommufd-compat-type1v2]... --size BYTES[@OFFSET]... "
                   "[--reps N] [--warmup W] [--min-reps M] [--budget SECONDS] [--iova ADDR]\n");
            return 0;
        }
        if (!v) die("option without a value (see --help)");
        i++;
        if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "type1") && strcmp(v, "type1v2") && strcmp(v, "iommufd-compat-type1") && strcmp(v, "iommufd-compat-type1v2"))
                die("--backend must be type1, type1v2, iommufd-compat-type1 or iommufd-compat-type1v2");
            if (nbackends == 4) die("too many --backend");
            backends[nbackends++] = v;
        } else if (!strcmp(a, "--size")) {
            if (nsizes == MAX_SIZES) die("too many --size");
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            char *at = strchr(buf, '@');
            offsets[nsizes] = 0;
            if (at) {
                *at = 0;
                if (parse_u64(at + 1, &offsets[nsizes])) die("bad --size offset");
            }
            if (parse_u64(buf, &sizes[nsizes]) || sizes[nsizes] == 0) die("bad --size");
            nsizes++;
        } else if (!strcmp(a, "--reps")) { if (parse_u64(v, &reps) || reps == 0 || reps > MAX_REPS) die("bad --reps"); }
        else if (!strcmp(a, "--warmup")) { if (parse_u64(v, &warmup)) die("bad --warmup"); }
        else if (!strcmp(a, "--min-reps")) { if (parse_u64(v, &min_reps) || min_reps == 0) die("bad --min-reps"); }
        else if (!strcmp(a, "--iova")) { if (parse_u64(v, &iova)) die("bad --iova"); }
        else if (!strcmp(a, "--budget")) {
            char *end;
            budget = strtod(v, &end);
            if (*end || budget < 0) die("bad --budget");
        } else die("unknown option (see --help)");
    }
    if (!device || !nsizes) die("--device and at least one --size are required (see --help)");
    if (!nbackends) backends[nbackends++] = "type1v2";
    if (min_reps > reps) min_reps = reps;

    char path[PATH_MAX], link[PATH_MAX];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", device);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) die("device has no iommu_group (not bound to vfio-pci, or no IOMMU)");
    link[n] = 0;
    const char *group_nr = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
    char group_path[PATH_MAX + 16];
    snprintf(group_path, sizeof group_path, "/dev/vfio/%s", group_nr);

    uint64_t *map_ns = calloc(reps, sizeof *map_ns), *unmap_ns = calloc(reps, sizeof *unmap_ns);
    if (!map_ns || !unmap_ns) die("out of memory");
    struct utsname u;
    uname(&u);
    printf("{\"schema\":\"vfio-exerciser-map-bench/1\",\"kernel\":\"%s\",\"iova\":%llu,\"points\":[", u.release,
           (unsigned long long)iova);
    int first = 1;
    for (int b = 0; b < nbackends; b++) {
        const char *name = backends[b];
        int compat = !strncmp(name, "iommufd-compat-", 15);
        const char *cpath = compat ? "/dev/iommu" : "/dev/vfio/vfio";
        int type = strcmp(compat ? name + 15 : name, "type1") ? VFIO_TYPE1v2_IOMMU : VFIO_TYPE1_IOMMU;
        const char *setup_err = NULL;
        int setup_errno = 0;
        int container = open(cpath, O_RDWR | O_CLOEXEC);
        int group = -1;
        if (container < 0) { setup_err = compat ? "open /dev/iommu" : "open /dev/vfio/vfio"; setup_errno = errno; }
        else if ((group = open(group_path, O_RDWR | O_CLOEXEC)) < 0) { setup_err = "open group"; setup_errno = errno; }
        else if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) { setup_err = "VFIO_GROUP_SET_CONTAINER"; setup_errno = errno; }
        else if (ioctl(container, VFIO_SET_IOMMU, type)) { setup_err = "VFIO_SET_IOMMU"; setup_errno = errno; }
        for (int s = 0; s < nsizes; s++) {
            uint64_t size = sizes[s];
            printf("%s{\"backend\":\"%s\",\"kind\":\"anon-private\",\"size\":%llu,", first ? "" : ",", backends[b],
                   (unsigned long long)size);
            first = 0;
            if (setup_err) {
                printf("\"status\":\"error\",\"reason\":");
                print_err(setup_err, setup_errno);
                printf("}");
                continue;
            }
            void *p = region(size, offsets[s]);
            if (!p) {
                printf("\"status\":\"error\",\"reason\":");
                print_err("mmap", errno);
                printf("}");
                continue;
            }
            long thp = anon_huge_kb((uintptr_t)p);
            uint64_t got = 0, i;
            const char *err = NULL;
            int err_no = 0;
            uint64_t start = 0;
            double user0 = 0, sys0 = 0, cpu0 = 0, user1, sys1, cpu1;
            struct cvfio_bracket br = {0, 0};
            struct cvfio_bracket_cost cal = {0, 0, 0};
            thread_cpu(&user0, &sys0, &cpu0);
            for (i = 0; i < warmup + reps; i++) {
                if (i == warmup) {
                    cal = cvfio_bracket_calibrate();
                    start = now_ns();
                    thread_cpu(&user0, &sys0, &cpu0);
                }
                /* Warm-up calls unbracketed, as the tool's (its bracket is set for the timed pairs only). */
                int timed = i >= warmup;
                struct vfio_iommu_type1_dma_map m = {
                    .argsz = sizeof m, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                    .vaddr = (uintptr_t)p, .iova = iova, .size = size,
                };
                uint64_t t0 = now_ns();
                int r = timed ? cvfio_bracketed_ioctl(&br, container, VFIO_IOMMU_MAP_DMA, &m) : ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
                uint64_t t1 = now_ns();
                if (r) { err = "VFIO_IOMMU_MAP_DMA"; err_no = errno; break; }
                struct vfio_iommu_type1_dma_unmap um = { .argsz = sizeof um, .flags = 0, .iova = iova, .size = size };
                uint64_t t2 = now_ns();
                r = timed ? cvfio_bracketed_ioctl(&br, container, VFIO_IOMMU_UNMAP_DMA, &um) : ioctl(container, VFIO_IOMMU_UNMAP_DMA, &um);
                uint64_t t3 = now_ns();
                if (r) { err = "VFIO_IOMMU_UNMAP_DMA"; err_no = errno; break; }
                if (um.size != size) { err = "VFIO_IOMMU_UNMAP_DMA reported a different size"; err_no = 0; break; }
                if (i >= warmup) {
                    map_ns[got] = t1 - t0;
                    unmap_ns[got] = t3 - t2;
                    got++;
                    if (got >= min_reps && (double)(now_ns() - start) / 1e9 > budget) break;
                }
            }
            thread_cpu(&user1, &sys1, &cpu1);
            munmap(p, size);
            if (err) {
                printf("\"status\":\"error\",\"reason\":");
                if (err_no) print_err(err, err_no);
                else printf("\"%s\"", err);
                printf("}");
                continue;
            }
            printf("\"status\":\"ok\",\"vaddr_offset\":%llu,\"anon_huge_kb\":%ld,\"warmup\":%llu,\"user_us\":%.0f,\"sys_us\":%.0f,\"cpu_us\":%.3f,",
                   (unsigned long long)((uintptr_t)p % HUGE_2M), thp, (unsigned long long)warmup, user1 - user0, sys1 - sys0, cpu1 - cpu0);
            printf("\"bracket_ns\":%llu,\"bracket_calls\":%llu,\"empty_inside_median_ns\":%llu,\"empty_whole_median_ns\":%llu,\"empty_n\":%llu,",
                   (unsigned long long)br.inside_ns, (unsigned long long)br.calls, (unsigned long long)cal.inside_ns,
                   (unsigned long long)cal.whole_ns, (unsigned long long)cal.n);
            print_samples("map_ns", map_ns, (int)got);
            printf(",");
            print_samples("unmap_ns", unmap_ns, (int)got);
            printf("}");
            fflush(stdout);
        }
        if (group >= 0) { ioctl(group, VFIO_GROUP_UNSET_CONTAINER); close(group); }
        if (container >= 0) close(container);
    }
    printf("]}\n");
    return 0;
}
