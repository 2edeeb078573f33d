#ifndef CVFIO_H
#define CVFIO_H
/* Shim over the kernel UAPI headers from linux-libc-dev: exposes only what Swift
 * cannot import directly. Structs and plain constants come from the headers. */
#include <stdint.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/vfio.h>
/* Package.swift defines CVFIO_IOMMUFD when it found the iommufd UAPI it builds against. */
#ifdef CVFIO_IOMMUFD
#include <linux/iommufd.h>
#define CVFIO_HAVE_IOMMUFD 1
#else
#define CVFIO_HAVE_IOMMUFD 0
#endif

static const int cvfio_have_iommufd_header = CVFIO_HAVE_IOMMUFD;

/* ioctl request numbers (function-like macros in the UAPI). */
static const unsigned long CVFIO_GET_API_VERSION = VFIO_GET_API_VERSION;
static const unsigned long CVFIO_CHECK_EXTENSION = VFIO_CHECK_EXTENSION;
static const unsigned long CVFIO_SET_IOMMU = VFIO_SET_IOMMU;
static const unsigned long CVFIO_GROUP_GET_STATUS = VFIO_GROUP_GET_STATUS;
static const unsigned long CVFIO_GROUP_SET_CONTAINER = VFIO_GROUP_SET_CONTAINER;
static const unsigned long CVFIO_GROUP_UNSET_CONTAINER = VFIO_GROUP_UNSET_CONTAINER;
static const unsigned long CVFIO_GROUP_GET_DEVICE_FD = VFIO_GROUP_GET_DEVICE_FD;
static const unsigned long CVFIO_DEVICE_GET_INFO = VFIO_DEVICE_GET_INFO;
static const unsigned long CVFIO_DEVICE_GET_REGION_INFO = VFIO_DEVICE_GET_REGION_INFO;
static const unsigned long CVFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
static const unsigned long CVFIO_IOMMU_GET_INFO = VFIO_IOMMU_GET_INFO;
static const unsigned long CVFIO_IOMMU_MAP_DMA = VFIO_IOMMU_MAP_DMA;
static const unsigned long CVFIO_IOMMU_UNMAP_DMA = VFIO_IOMMU_UNMAP_DMA;
static const unsigned long CVFIO_IOMMU_DIRTY_PAGES = VFIO_IOMMU_DIRTY_PAGES;

/* mmap/memfd flag encodings (nested macros Swift does not import). */
#include <linux/mman.h>
#include <linux/memfd.h>
static const int CVFIO_MAP_HUGETLB = 0x40000;
static const int CVFIO_MAP_HUGE_2MB = (int)MAP_HUGE_2MB;
static const int CVFIO_MAP_HUGE_1GB = (int)MAP_HUGE_1GB;
static const unsigned int CVFIO_MFD_HUGETLB = MFD_HUGETLB;
static const unsigned int CVFIO_MFD_HUGE_2MB = MFD_HUGE_2MB;
static const int CVFIO_MADV_HUGEPAGE = 14;
int cvfio_memfd_create(const char *name, unsigned int flags);
/* statfs f_type of path, or -1 with errno. */
long cvfio_fs_magic(const char *path);

#if CVFIO_HAVE_IOMMUFD
/* iommufd and the VFIO cdev ioctls (UAPI 6.6+; the package builds them only with such headers). */
static const unsigned long CVFIO_IOMMU_DESTROY = IOMMU_DESTROY;
static const unsigned long CVFIO_IOMMU_IOAS_ALLOC = IOMMU_IOAS_ALLOC;
static const unsigned long CVFIO_IOMMU_IOAS_IOVA_RANGES = IOMMU_IOAS_IOVA_RANGES;
static const unsigned long CVFIO_IOMMU_IOAS_MAP = IOMMU_IOAS_MAP;
static const unsigned long CVFIO_IOMMU_IOAS_MAP_FILE = IOMMU_IOAS_MAP_FILE;
static const unsigned long CVFIO_IOMMU_IOAS_UNMAP = IOMMU_IOAS_UNMAP;
static const unsigned long CVFIO_IOMMU_GET_HW_INFO = IOMMU_GET_HW_INFO;
static const unsigned long CVFIO_IOMMU_HWPT_ALLOC = IOMMU_HWPT_ALLOC;
static const unsigned long CVFIO_IOMMU_HWPT_SET_DIRTY_TRACKING = IOMMU_HWPT_SET_DIRTY_TRACKING;
static const unsigned long CVFIO_IOMMU_HWPT_GET_DIRTY_BITMAP = IOMMU_HWPT_GET_DIRTY_BITMAP;
static const unsigned long CVFIO_DEVICE_BIND_IOMMUFD = VFIO_DEVICE_BIND_IOMMUFD;
static const unsigned long CVFIO_DEVICE_ATTACH_IOMMUFD_PT = VFIO_DEVICE_ATTACH_IOMMUFD_PT;
static const unsigned long CVFIO_DEVICE_DETACH_IOMMUFD_PT = VFIO_DEVICE_DETACH_IOMMUFD_PT;
static const unsigned long CVFIO_DEVICE_FEATURE = VFIO_DEVICE_FEATURE;
static const uint32_t CVFIO_DEVICE_FEATURE_GET = VFIO_DEVICE_FEATURE_GET;
#ifdef VFIO_DEVICE_FEATURE_DMA_BUF
/* vfio-pci BARs as dma-bufs (7.x UAPI); 0 where the header predates it. */
static const uint32_t CVFIO_DEVICE_FEATURE_DMA_BUF = VFIO_DEVICE_FEATURE_DMA_BUF;
#define CVFIO_HAVE_DMA_BUF 1
#else
static const uint32_t CVFIO_DEVICE_FEATURE_DMA_BUF = 0;
#endif
/* cvfio_memlock_probe for an IOAS: the child maps with IOMMU_IOAS_MAP. */
int cvfio_memlock_probe_ioas(int iommufd, uint32_t ioas_id, uint64_t iova, uint64_t size,
                             uint64_t limit_bytes, uint64_t *unmapped_out);
#endif

/* The test module's UAPI (kmod/): VM_MIXEDMAP mmaps and an mdev that pins on request. */
#include "../../../kmod/vfio_exerciser_test_uapi.h"
static const unsigned long CVFIO_TEST_PIN = VFIO_EXERCISER_TEST_PIN;
static const unsigned long CVFIO_TEST_UNPIN = VFIO_EXERCISER_TEST_UNPIN;
static const unsigned long CVFIO_TEST_RW = VFIO_EXERCISER_TEST_RW;
static const unsigned long CVFIO_TEST_PINNED = VFIO_EXERCISER_TEST_PINNED;

/* Non-variadic ioctl: glibc's is variadic and not callable from Swift. */
int cvfio_ioctl(int fd, unsigned long request, void *arg);
int cvfio_ioctl_int(int fd, unsigned long request, unsigned long arg);

/* Volatile MMIO accessors for mmapped BARs. */
static inline uint32_t cvfio_mmio_read32(const volatile void *base, size_t off) {
    return *(const volatile uint32_t *)((const volatile char *)base + off);
}
static inline uint64_t cvfio_mmio_read64(const volatile void *base, size_t off) {
    return *(const volatile uint64_t *)((const volatile char *)base + off);
}
static inline void cvfio_mmio_write32(volatile void *base, size_t off, uint32_t v) {
    *(volatile uint32_t *)((volatile char *)base + off) = v;
}
static inline void cvfio_mmio_write64(volatile void *base, size_t off, uint64_t v) {
    *(volatile uint64_t *)((volatile char *)base + off) = v;
}
/* Orders plain stores to DMA memory (a queue entry) before a doorbell write, and a completion's
   phase load before the loads of its other fields. */
static inline void cvfio_dma_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/* memfd_secret has no glibc wrapper in Debian 12; -1/ENOSYS where the syscall is absent. */
int cvfio_memfd_secret(unsigned int flags);
/* Symbolic errno name ("EFAULT"), or NULL when glibc has none. */
const char *cvfio_errno_name(int err);

/* Forks a child that lowers RLIMIT_MEMLOCK to limit_bytes, drops CAP_IPC_LOCK, touches
 * `size` bytes of fresh anonymous memory and maps them at `iova` through container_fd.
 * Swift cannot fork safely, hence C. Returns 0 when the map succeeded (the child unmaps
 * it), the positive errno of the map, or -errno when the child could not be set up. */
int cvfio_memlock_probe(int container_fd, uint64_t iova, uint64_t size, uint64_t limit_bytes,
                        uint64_t *unmapped_out);

/* fork(2) for per-case isolation: Swift marks fork unavailable. The caller must be
 * single-threaded (checked by the caller through /proc/self/task). The child is killed
 * when the parent dies. */
int cvfio_fork(void);
int cvfio_pidfd_open(int pid);
/* The forked case child has been waited for (the signal handler need not end it). */
void cvfio_child_reaped(void);
/* "SEGV" for SIGSEGV; "?" when unknown. */
const char *cvfio_signal_name(int sig);

/* Driver restore on fatal signals: the handler may only use async-signal-safe calls. It kills
 * the running case child, starts `<this exe> unbind DEV --after-pid <us>` (which waits for us
 * to be gone, since vfio-pci waits for every holder of the device), and re-raises. The driver
 * to return to is in the state file. Disarm after a normal restore. */
void cvfio_binding_arm(const char *bdf);
void cvfio_binding_disarm(void);
/* Installs handlers for SIGINT, SIGTERM, SIGHUP, SIGQUIT that restore, then re-raise. */
void cvfio_binding_install_handlers(void);

/* Drop CAP_IPC_LOCK from every capability set of the calling process. */
int cvfio_drop_ipc_lock(void);

/* The bench's host yardstick: CLOCK_MONOTONIC ns for `passes` memsets of p[0, len), and for
 * `iterations` rounds of xorshift; out of the optimizer's reach. */
uint64_t cvfio_yardstick_write(void *p, size_t len, int passes);
uint64_t cvfio_yardstick_cpu(uint64_t iterations);
/* --- events (issue 13): mremap(MREMAP_MAYMOVE|MREMAP_FIXED); glibc's mremap is variadic. */
void *cvfio_mremap_fixed(void *old_addr, size_t size, void *new_addr);
/* --- end events */

#endif
