/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * User API of the vfio_exerciser_test module (kmod/vfio_exerciser_test.c).
 *
 * Shared by the module and by user space (C, or Swift through a C shim):
 * only <linux/ioctl.h> and <linux/types.h> are included, every struct has
 * naturally aligned fields and explicit padding, so its layout is the same
 * for every compiler.
 *
 * 1. The misc device VFIO_EXERCISER_TEST_DEV.  mmap(MAP_SHARED) of it gives a
 *    VM_MIXEDMAP vma whose backing is chosen by the mmap offset:
 *      VFIO_EXERCISER_TEST_PGOFF_SPECIAL * page size (offset 0):
 *        the MMIO pfns of a PCI BAR (default: BAR0 of 0000:00:04.0, the test
 *        VM's second QEMU "edu" device, 1 MiB).  They have no struct page and
 *        are inserted with vmf_insert_mixed(), so the PTEs are special:
 *        GUP with FOLL_PIN returns -EEXIST for them (since v5.18).
 *        At most the BAR's size can be mapped.
 *      VFIO_EXERCISER_TEST_PGOFF_PAGE * page size (offset one page):
 *        ordinary pages that the module allocates for each mmap(), inserted
 *        with vmf_insert_page() (normal refcounted PTEs): these pin fine.
 *        At most VFIO_EXERCISER_TEST_PAGE_MAX_BYTES.
 *    Each page's PTE is inserted by the fault handler on first access (or on
 *    GUP's fault-in).  MAP_PRIVATE is refused (EINVAL).  The device has no
 *    ioctls.
 *
 * 2. An mdev parent VFIO_EXERCISER_TEST_MDEV_PARENT with one type,
 *    VFIO_EXERCISER_TEST_MDEV_TYPE: write a UUID to
 *      /sys/class/mdev_bus/<parent>/mdev_supported_types/<type>/create
 *    to get a vfio device with its own IOMMU group (emulated IOMMU: in a
 *    type1 container nothing is pinned at VFIO_IOMMU_MAP_DMA time, only when
 *    the device asks).  Its device fd (VFIO_GROUP_GET_DEVICE_FD with the UUID)
 *    takes the ioctls below besides VFIO_DEVICE_GET_INFO (no regions, no
 *    irqs).  Pins are held until VFIO_EXERCISER_TEST_UNPIN, until the IOVA
 *    range is unmapped (the vfio .dma_unmap callback unpins them) or until
 *    the device fd is closed.
 */
#ifndef _VFIO_EXERCISER_TEST_UAPI_H
#define _VFIO_EXERCISER_TEST_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VFIO_EXERCISER_TEST_DEV "/dev/vfio_exerciser_test"
#define VFIO_EXERCISER_TEST_MDEV_PARENT "vfio_exerciser_test"
/* mdev type directory name: "<parent class>-<type name>" */
#define VFIO_EXERCISER_TEST_MDEV_TYPE "vfio_exerciser_test-pin"
/* /sys/bus/mdev/devices/<uuid>/mdev_type/device_api */
#define VFIO_EXERCISER_TEST_DEVICE_API "vfio-exerciser-test"

/* mmap offsets, in pages: multiply by sysconf(_SC_PAGESIZE). */
#define VFIO_EXERCISER_TEST_PGOFF_SPECIAL 0
#define VFIO_EXERCISER_TEST_PGOFF_PAGE 1
#define VFIO_EXERCISER_TEST_PAGE_MAX_BYTES (16U << 20)

#define VFIO_EXERCISER_TEST_IOC_MAGIC 0xBE

/*
 * VFIO_EXERCISER_TEST_PIN: vfio_pin_pages(vdev, iova, npages, prot, pages)
 * with prot = IOMMU_READ, or IOMMU_READ | IOMMU_WRITE with
 * VFIO_EXERCISER_TEST_PIN_WRITE.  Returns what vfio_pin_pages() returns:
 * the number of pages pinned (>= 0), or -1 with errno set to its error
 * (e.g. EFAULT/EEXIST from GUP, EINVAL for an unmapped IOVA, EPERM for a
 * prot the mapping lacks, E2BIG above 512 pages).
 * iova must be page aligned; 1 <= npages <= VFIO_EXERCISER_TEST_PIN_MAX.
 *
 * VFIO_EXERCISER_TEST_UNPIN: same struct, flags 0.  Unpins the range that a
 * PIN with this very iova and npages pinned (ENOENT if there is none);
 * npages == 0 unpins everything this device holds.  Returns the number of
 * pages unpinned.
 */
struct vfio_exerciser_test_pin {
	__u64 iova;
	__u32 npages;
	__u32 flags;
};
#define VFIO_EXERCISER_TEST_PIN_WRITE (1U << 0)
#define VFIO_EXERCISER_TEST_PIN_MAX 512

/*
 * VFIO_EXERCISER_TEST_RW: vfio_dma_rw(vdev, iova, buffer, len, write).
 * Without VFIO_EXERCISER_TEST_RW_WRITE, len bytes at IOVA iova are copied
 * into the user buffer at data; with it, from data to the IOVA.
 * 1 <= len <= VFIO_EXERCISER_TEST_RW_MAX.  Returns 0, or -1 with errno.
 * Works on any mapped IOVA, pinned or not.
 */
struct vfio_exerciser_test_rw {
	__u64 iova;
	__u64 data; /* user pointer */
	__u32 len;
	__u32 flags;
};
#define VFIO_EXERCISER_TEST_RW_WRITE (1U << 0)
#define VFIO_EXERCISER_TEST_RW_MAX (1U << 20)

#define VFIO_EXERCISER_TEST_PIN \
	_IOW(VFIO_EXERCISER_TEST_IOC_MAGIC, 0x10, struct vfio_exerciser_test_pin)
#define VFIO_EXERCISER_TEST_UNPIN \
	_IOW(VFIO_EXERCISER_TEST_IOC_MAGIC, 0x11, struct vfio_exerciser_test_pin)
#define VFIO_EXERCISER_TEST_RW \
	_IOW(VFIO_EXERCISER_TEST_IOC_MAGIC, 0x12, struct vfio_exerciser_test_rw)
/* Returns the number of pages this device currently holds pinned. */
#define VFIO_EXERCISER_TEST_PINNED _IO(VFIO_EXERCISER_TEST_IOC_MAGIC, 0x13)

#endif /* _VFIO_EXERCISER_TEST_UAPI_H */
