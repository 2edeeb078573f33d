#define _GNU_SOURCE
#include "cvfio.h"
#include "cvfio_cpu.h"
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <linux/capability.h>

static __thread struct cvfio_bracket *cvfio_current_bracket;

void cvfio_bracket_set(struct cvfio_bracket *b) { cvfio_current_bracket = b; }

int cvfio_ioctl(int fd, unsigned long request, void *arg) {
    struct cvfio_bracket *b = cvfio_current_bracket;
    return b ? cvfio_bracketed_ioctl(b, fd, request, arg) : ioctl(fd, request, arg);
}
int cvfio_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }

int cvfio_memfd_create(const char *name, unsigned int flags) { return memfd_create(name, flags); }

int cvfio_memfd_secret(unsigned int flags) {
#ifdef SYS_memfd_secret
    return (int)syscall(SYS_memfd_secret, flags);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int cvfio_drop_ipc_lock(void) {
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) != 0) return -1;
    unsigned idx = CAP_IPC_LOCK / 32, bit = 1u << (CAP_IPC_LOCK % 32);
    data[idx].effective &= ~bit;
    data[idx].permitted &= ~bit;
    data[idx].inheritable &= ~bit;
    if (prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0 && errno != EINVAL) return -1;
    return (int)syscall(SYS_capset, &hdr, data);
}

#include <string.h>
#include <stdio.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

const char *cvfio_errno_name(int err) { return strerrorname_np(err); }

/* The child half of a memlock probe: lower the limit, drop the capability, touch `size` bytes
 * and map them with `map`; result[0]: 0 ok, >0 map errno, <0 setup failure; result[1]: bytes
 * the unmap reported. */
typedef int (*probe_map_fn)(const void *ctx, void *p, uint64_t iova, uint64_t size, uint64_t *unmapped);

static int probe(probe_map_fn map, const void *ctx, uint64_t iova, uint64_t size, uint64_t limit_bytes,
                 uint64_t *unmapped_out) {
    int pfd[2];
    if (pipe(pfd) != 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(pfd[0]); close(pfd[1]); return -e; }
    if (pid == 0) {
        int64_t result[2] = { 0, 0 };
        struct rlimit rl = { limit_bytes, limit_bytes };
        close(pfd[0]);
        if (setrlimit(RLIMIT_MEMLOCK, &rl) != 0 || cvfio_drop_ipc_lock() != 0) {
            result[0] = -errno;
        } else {
            void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) {
                result[0] = -errno;
            } else {
                memset(p, 0x5a, size);
                uint64_t unmapped = 0;
                result[0] = map(ctx, p, iova, size, &unmapped);
                result[1] = (int64_t)unmapped;
            }
        }
        ssize_t w = write(pfd[1], result, sizeof(result));
        _exit(w == (ssize_t)sizeof(result) ? 0 : 1);
    }
    close(pfd[1]);
    int64_t result[2] = { -EPIPE, 0 };
    ssize_t r;
    do { r = read(pfd[0], result, sizeof(result)); } while (r < 0 && errno == EINTR);
    close(pfd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (r != (ssize_t)sizeof(result)) return -EPIPE;
    if (unmapped_out) *unmapped_out = (uint64_t)result[1];
    return (int)result[0];
}

static int map_container(const void *ctx, void *p, uint64_t iova, uint64_t size, uint64_t *unmapped) {
    int fd = *(const int *)ctx;
    struct vfio_iommu_type1_dma_map m = {
        .argsz = sizeof(m), .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uint64_t)(uintptr_t)p, .iova = iova, .size = size };
    if (ioctl(fd, VFIO_IOMMU_MAP_DMA, &m) != 0) return errno;
    struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = size };
    if (ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u) == 0) *unmapped = u.size;
    return 0;
}

int cvfio_memlock_probe(int container_fd, uint64_t iova, uint64_t size, uint64_t limit_bytes,
                        uint64_t *unmapped_out) {
    return probe(map_container, &container_fd, iova, size, limit_bytes, unmapped_out);
}

#if CVFIO_HAVE_IOMMUFD
struct ioas_ctx { int fd; uint32_t ioas; };

static int map_ioas(const void *ctx, void *p, uint64_t iova, uint64_t size, uint64_t *unmapped) {
    const struct ioas_ctx *c = ctx;
    struct iommu_ioas_map m = {
        .size = sizeof(m), .ioas_id = c->ioas, .user_va = (uint64_t)(uintptr_t)p, .length = size, .iova = iova,
        .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE };
    if (ioctl(c->fd, IOMMU_IOAS_MAP, &m) != 0) return errno;
    struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = c->ioas, .iova = iova, .length = size };
    if (ioctl(c->fd, IOMMU_IOAS_UNMAP, &u) == 0) *unmapped = u.length;
    return 0;
}

int cvfio_memlock_probe_ioas(int iommufd, uint32_t ioas_id, uint64_t iova, uint64_t size,
                             uint64_t limit_bytes, uint64_t *unmapped_out) {
    struct ioas_ctx c = { iommufd, ioas_id };
    return probe(map_ioas, &c, iova, size, limit_bytes, unmapped_out);
}
#endif

long cvfio_fs_magic(const char *path) {
    struct statfs s;
    if (statfs(path, &s) != 0) return -1;
    return (long)s.f_type;
}

static volatile pid_t case_child;

int cvfio_fork(void) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid > 0) case_child = pid;
    if (pid == 0) {
        /* A case must not outlive the run: an orphan would hold the device open. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
    }
    return pid;
}

/* pidfd_open(2) (5.3+): poll() on it wakes when the child exits; glibc 2.36's wrapper is not in
 * every libc the guest may get, and syscall() is variadic. -1 with errno when unsupported. */
int cvfio_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

const char *cvfio_signal_name(int sig) {
    const char *n = sigabbrev_np(sig);
    return n ? n : "?";
}

#include <fcntl.h>

static char armed_bdf[64];
static char armed_exe[4096];
static volatile sig_atomic_t armed;
extern char **environ;

void cvfio_binding_arm(const char *bdf) {
    armed = 0;
    snprintf(armed_bdf, sizeof(armed_bdf), "%s", bdf);
    ssize_t n = readlink("/proc/self/exe", armed_exe, sizeof(armed_exe) - 1);
    armed_exe[n > 0 ? n : 0] = 0;
    armed = 1;
}

void cvfio_binding_disarm(void) { armed = 0; }

void cvfio_child_reaped(void) { case_child = 0; }

/* vfio-pci lets a device go only when nobody holds it: not our fds, not our BAR mmaps. So the
 * restore happens in a fresh process (`unbind DEV --after-pid PID`) that waits for us to die. */
static void restore_and_reraise(int sig) {
    pid_t child = case_child;
    if (child > 0) {
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
    }
    if (armed && armed_exe[0]) {
        char pid[24];
        int n = 0;
        char tmp[24];
        for (long v = getpid(); v > 0; v /= 10) tmp[n++] = (char)('0' + v % 10);
        for (int i = 0; i < n; i++) pid[i] = tmp[n - 1 - i];
        pid[n] = 0;
        if (fork() == 0) {
            char *argv[] = { armed_exe, "unbind", armed_bdf, "--after-pid", pid, NULL };
            setsid();
            execve(armed_exe, argv, environ);
            _exit(127);
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
}
void cvfio_binding_install_handlers(void) {
    int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT };
    for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = restore_and_reraise;
        sigaction(sigs[i], &sa, NULL);
    }
}

/* --- events (issue 13) */
void *cvfio_mremap_fixed(void *old_addr, size_t size, void *new_addr) {
    return mremap(old_addr, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr);
}
/* --- end events */

/* The bench's host yardstick (Bench/Yardstick.swift), here so no optimizer sees through it:
 * written in Swift, all but the last of the passes and the loop's arithmetic could be dropped. */
uint64_t cvfio_yardstick_write(void *p, size_t len, int passes) {
    uint64_t t0 = cvfio_clock_ns(CLOCK_MONOTONIC);
    for (int i = 0; i < passes; i++) {
        memset(p, 2 + i, len);
        __asm__ volatile("" : : "r"(p) : "memory");
    }
    return cvfio_clock_ns(CLOCK_MONOTONIC) - t0;
}

uint64_t cvfio_yardstick_cpu(uint64_t iterations) {
    uint64_t x = 0x9E3779B97F4A7C15ull, t0 = cvfio_clock_ns(CLOCK_MONOTONIC);
    for (uint64_t i = 0; i < iterations; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        __asm__ volatile("" : "+r"(x));
    }
    return cvfio_clock_ns(CLOCK_MONOTONIC) - t0;
}
