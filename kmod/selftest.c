// SPDX-License-Identifier: GPL-2.0
/*
 * selftest.c: minimal proof of the vfio_exerciser_test module in the test VM.
 *
 *   gcc -static -O2 -Wall -Ikmod -o selftest kmod/selftest.c
 *   selftest [EDU_BDF]          (default 0000:00:03.0)
 *
 * (i)  type1v2 container holding EDU_BDF's group: VFIO_IOMMU_MAP_DMA of
 *      64 KiB of the module's "special" mmap (special PTEs, no struct page)
 *      and of its "page" mmap (module pages), plus anonymous memory.
 * (ii) type1v2 container holding only the module's mdev group: map
 *      anonymous memory with a pattern, PIN it, read it back with RW; map a
 *      hole and PIN it; unmap a pinned range (the .dma_unmap callback must
 *      unpin); and PIN the special and page mmaps (the seed bug's path).
 *
 * (iii) only with /dev/iommu (CONFIG_IOMMUFD): the mdev's vfio cdev bound to
 *      iommufd (the emulated binding), an IOAS with the same anon/hole/
 *      special mappings, PIN/RW/unmap through iommufd's access path.
 *
 * One line per check: "SELFTEST <name> expect=<...> got=<...> PASS|FAIL";
 * then "SELFTEST-SUMMARY <n> passed, <m> failed". Exit 0 if none failed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <linux/vfio.h>

#include "vfio_exerciser_test_uapi.h"

/* iommufd and vfio cdev UAPI (v6.2 / v6.6), for builds against older headers. */
#ifndef VFIO_DEVICE_BIND_IOMMUFD
#define VFIO_DEVICE_BIND_IOMMUFD _IO(VFIO_TYPE, VFIO_BASE + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VFIO_TYPE, VFIO_BASE + 19)
#endif
struct st_bind_iommufd { __u32 argsz, flags; __s32 iommufd; __u32 out_devid; };
struct st_attach_pt { __u32 argsz, flags, pt_id; };
#define ST_IOMMUFD_TYPE ';'
struct st_ioas_alloc { __u32 size, flags, out_ioas_id; };
struct st_ioas_map {
	__u32 size, flags, ioas_id, reserved;
	__u64 user_va, length, iova;
};
struct st_ioas_unmap { __u32 size, ioas_id; __u64 iova, length; };
#define ST_IOMMU_IOAS_ALLOC _IO(ST_IOMMUFD_TYPE, 0x81)
#define ST_IOMMU_IOAS_MAP _IO(ST_IOMMUFD_TYPE, 0x85)
#define ST_IOMMU_IOAS_UNMAP _IO(ST_IOMMUFD_TYPE, 0x86)
#define ST_MAP_FIXED_IOVA (1 << 0)
#define ST_MAP_WRITEABLE (1 << 1)
#define ST_MAP_READABLE (1 << 2)

#define SZ (64UL << 10)
#define NPAGES(len) ((unsigned int)((len) / 4096))

static int npass, nfail;

/* "ok", "<n>" or an errno name, for the report. */
static const char *outcome(long ret, int err, char *buf, size_t n)
{
	if (ret < 0)
		snprintf(buf, n, "%s", strerrorname_np(err) ? strerrorname_np(err) : "E?");
	else if (ret == 0)
		snprintf(buf, n, "ok");
	else
		snprintf(buf, n, "%ld", ret);
	return buf;
}

/* expect: "ok", a count, an errno name, or "*" (report only). */
static void check(const char *name, const char *expect, long ret, int err)
{
	char got[64];
	int pass;

	outcome(ret, err, got, sizeof(got));
	pass = !strcmp(expect, "*") || !strcmp(expect, got);
	printf("SELFTEST %s expect=%s got=%s %s\n", name, expect, got,
	       strcmp(expect, "*") ? (pass ? "PASS" : "FAIL") : "INFO");
	if (strcmp(expect, "*")) {
		if (pass)
			npass++;
		else
			nfail++;
	}
	fflush(stdout);
}

static void die(const char *what)
{
	printf("SELFTEST-SETUP-ERROR %s: %s\n", what, strerror(errno));
	printf("SELFTEST-SUMMARY %d passed, %d failed\n", npass, nfail + 1);
	exit(1);
}

static int group_of(const char *sysdev)
{
	char p[PATH_MAX], t[PATH_MAX];
	ssize_t n;

	snprintf(p, sizeof(p), "%s/iommu_group", sysdev);
	n = readlink(p, t, sizeof(t) - 1);
	if (n < 0)
		return -1;
	t[n] = 0;
	return atoi(basename(t));
}

/* First mdev of our type: its uuid, returns its group (or -1). */
static int find_mdev(char *uuid, size_t n)
{
	DIR *d = opendir("/sys/bus/mdev/devices");
	struct dirent *e;
	int g = -1;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char p[PATH_MAX], t[PATH_MAX];
		ssize_t l;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s/mdev_type", e->d_name);
		l = readlink(p, t, sizeof(t) - 1);
		if (l < 0)
			continue;
		t[l] = 0;
		if (strcmp(basename(t), VFIO_EXERCISER_TEST_MDEV_TYPE))
			continue;
		snprintf(uuid, n, "%s", e->d_name);
		snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s", e->d_name);
		g = group_of(p);
		break;
	}
	closedir(d);
	return g;
}

/* New type1v2 container holding group g; returns the container fd. */
static int container_with(int g, int *groupfd)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	char p[64];
	int c, fd;

	c = open("/dev/vfio/vfio", O_RDWR);
	if (c < 0)
		die("open /dev/vfio/vfio");
	if (ioctl(c, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		die("VFIO_GET_API_VERSION");
	if (ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0)
		die("no VFIO_TYPE1v2_IOMMU");
	snprintf(p, sizeof(p), "/dev/vfio/%d", g);
	fd = open(p, O_RDWR);
	if (fd < 0)
		die(p);
	if (ioctl(fd, VFIO_GROUP_GET_STATUS, &st) || !(st.flags & VFIO_GROUP_FLAGS_VIABLE))
		die("group not viable");
	if (ioctl(fd, VFIO_GROUP_SET_CONTAINER, &c))
		die("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		die("VFIO_SET_IOMMU type1v2");
	*groupfd = fd;
	return c;
}

static long map_dma(int c, void *vaddr, uint64_t iova, uint64_t size, int *err)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof(m),
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uintptr_t)vaddr,
		.iova = iova,
		.size = size,
	};
	long r = ioctl(c, VFIO_IOMMU_MAP_DMA, &m);

	*err = errno;
	return r;
}

static long unmap_dma(int c, uint64_t iova, uint64_t size, int *err)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof(u), .iova = iova, .size = size,
	};
	long r = ioctl(c, VFIO_IOMMU_UNMAP_DMA, &u);

	*err = errno;
	return r < 0 ? r : (long)u.size;
}

static long pin(int dev, uint64_t iova, unsigned int npages, int write, int *err)
{
	struct vfio_exerciser_test_pin p = {
		.iova = iova, .npages = npages,
		.flags = write ? VFIO_EXERCISER_TEST_PIN_WRITE : 0,
	};
	long r = ioctl(dev, VFIO_EXERCISER_TEST_PIN, &p);

	*err = errno;
	return r;
}

static long rw(int dev, uint64_t iova, void *buf, unsigned int len, int write, int *err)
{
	struct vfio_exerciser_test_rw r = {
		.iova = iova, .data = (uintptr_t)buf, .len = len,
		.flags = write ? VFIO_EXERCISER_TEST_RW_WRITE : 0,
	};
	long ret = ioctl(dev, VFIO_EXERCISER_TEST_RW, &r);

	*err = errno;
	return ret;
}

static long pinned(int dev, int *err)
{
	long r = ioctl(dev, VFIO_EXERCISER_TEST_PINNED);

	*err = errno;
	return r;
}

static long ioas_map(int fd, __u32 ioas, void *va, uint64_t iova, uint64_t len, int *err)
{
	struct st_ioas_map m = {
		.size = sizeof(m), .ioas_id = ioas,
		.flags = ST_MAP_FIXED_IOVA | ST_MAP_READABLE | ST_MAP_WRITEABLE,
		.user_va = (uintptr_t)va, .length = len, .iova = iova,
	};
	long r = ioctl(fd, ST_IOMMU_IOAS_MAP, &m);

	*err = errno;
	return r;
}

static long ioas_unmap(int fd, __u32 ioas, uint64_t iova, uint64_t len, int *err)
{
	struct st_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = len };
	long r = ioctl(fd, ST_IOMMU_IOAS_UNMAP, &u);

	*err = errno;
	return r < 0 ? r : (long)u.length;
}

/* (iii): the mdev through its vfio cdev bound to iommufd. */
static void iommufd_part(const char *uuid, uint8_t *anon, uint8_t *hole, uint8_t *special,
			 uint8_t *buf, const char *exp)
{
	struct st_ioas_alloc a = { .size = sizeof(a) };
	char p[PATH_MAX], cdev[PATH_MAX] = "";
	const uint64_t A = 0x10000000, H = 0x20000000, S = 0x30000000;
	struct dirent *e;
	int ifd, dev, err;
	DIR *d;
	long r;

	if (access("/dev/iommu", F_OK)) {
		printf("SELFTEST-SKIP iii no /dev/iommu (kernel without CONFIG_IOMMUFD)\n");
		return;
	}
	snprintf(p, sizeof(p), "/sys/bus/mdev/devices/%s/vfio-dev", uuid);
	d = opendir(p);
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, "vfio", 4))
			snprintf(cdev, sizeof(cdev), "/dev/vfio/devices/%s", e->d_name);
	if (d)
		closedir(d);
	if (!cdev[0]) {
		printf("SELFTEST-SKIP iii no vfio cdev for %s (CONFIG_VFIO_DEVICE_CDEV off)\n", uuid);
		return;
	}
	ifd = open("/dev/iommu", O_RDWR);
	dev = open(cdev, O_RDWR);
	if (ifd < 0 || dev < 0)
		die("open /dev/iommu or the mdev cdev");
	{
		struct st_bind_iommufd b = { .argsz = sizeof(b), .iommufd = ifd };

		r = ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &b);
		check("iii.iommufd.bind-mdev", "ok", r, errno);
	}
	if (ioctl(ifd, ST_IOMMU_IOAS_ALLOC, &a))
		die("IOMMU_IOAS_ALLOC");
	{
		struct st_attach_pt at = { .argsz = sizeof(at), .pt_id = a.out_ioas_id };

		r = ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at);
		check("iii.iommufd.attach-ioas", "ok", r, errno);
	}
	r = ioas_map(ifd, a.out_ioas_id, anon, A, SZ, &err);
	check("iii.iommufd.map-anon", "ok", r, err);
	r = pin(dev, A, NPAGES(SZ), 1, &err);
	check("iii.iommufd.pin-anon", "16", r, err);
	memset(buf, 0, SZ);
	r = rw(dev, A, buf, SZ, 0, &err);
	check("iii.iommufd.rw-read-anon", "ok", r, err);
	check("iii.iommufd.rw-read-anon.pattern", "ok", memcmp(buf, anon, SZ) ? -1 : 0, EBADMSG);
	r = ioas_map(ifd, a.out_ioas_id, hole, H, SZ, &err);
	check("iii.iommufd.map-hole", "*", r, err);
	if (r == 0) {
		r = pin(dev, H, NPAGES(SZ), 1, &err);
		check("iii.iommufd.pin-hole", "EFAULT", r, err);
	}
	r = ioas_unmap(ifd, a.out_ioas_id, A, SZ, &err);
	check("iii.iommufd.unmap-pinned-anon", exp, r, err);
	r = pinned(dev, &err);
	check("iii.iommufd.pinned-after-unmap", "ok", r, err);
	r = ioas_map(ifd, a.out_ioas_id, special, S, SZ, &err);
	check("iii.iommufd.map-special", "*", r, err);
	if (r == 0) {
		r = pin(dev, S, NPAGES(SZ), 1, &err);
		check("iii.iommufd.pin-special", "*", r, err);
	}
	close(dev);
	close(ifd);
}

int main(int argc, char **argv)
{
	const char *edu = argc > 1 ? argv[1] : "0000:00:03.0";
	long pg = sysconf(_SC_PAGESIZE);
	char p[PATH_MAX], uuid[NAME_MAX + 1], exp[16];
	int tdev, edu_g, mdev_g, c1, c2, g1, g2, dev, err, i;
	uint8_t *special, *page, *anon, *hole, *buf;
	long r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s", edu);
	edu_g = group_of(p);
	if (edu_g < 0)
		die("edu iommu_group");
	mdev_g = find_mdev(uuid, sizeof(uuid));
	if (mdev_g < 0)
		die("no " VFIO_EXERCISER_TEST_MDEV_TYPE " mdev");
	printf("SELFTEST-INFO edu=%s group=%d mdev=%s group=%d\n", edu, edu_g, uuid, mdev_g);

	tdev = open(VFIO_EXERCISER_TEST_DEV, O_RDWR);
	if (tdev < 0)
		die(VFIO_EXERCISER_TEST_DEV);
	special = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, tdev,
		       VFIO_EXERCISER_TEST_PGOFF_SPECIAL * pg);
	if (special == MAP_FAILED)
		die("mmap special");
	page = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, tdev,
		    VFIO_EXERCISER_TEST_PGOFF_PAGE * pg);
	if (page == MAP_FAILED)
		die("mmap page");
	r = (long)mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE, tdev, 0);
	check("mmap-private-refused", "EINVAL", r == (long)MAP_FAILED ? -1 : 0, errno);
	for (i = 0; i < (int)SZ; i++)
		page[i] = (uint8_t)(i * 7 + 3);

	anon = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	hole = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	buf = malloc(SZ);
	if (anon == MAP_FAILED || hole == MAP_FAILED || !buf)
		die("mmap anon");
	munmap(hole, SZ); /* now a hole */
	for (i = 0; i < (int)SZ; i++)
		anon[i] = (uint8_t)(i ^ 0x5a);

	/* (i) container with the edu group: pinning happens at MAP_DMA. */
	c1 = container_with(edu_g, &g1);
	r = map_dma(c1, special, 1UL << 32, SZ, &err);
	check("i.type1v2-edu.map-special", "EEXIST", r, err);
	r = map_dma(c1, page, (1UL << 32) + (1UL << 20), SZ, &err);
	check("i.type1v2-edu.map-page", "ok", r, err);
	r = map_dma(c1, anon, (1UL << 32) + (2UL << 20), SZ, &err);
	check("i.type1v2-edu.map-anon", "ok", r, err);
	r = unmap_dma(c1, (1UL << 32) + (1UL << 20), SZ, &err);
	snprintf(exp, sizeof(exp), "%lu", SZ);
	check("i.type1v2-edu.unmap-page", exp, r, err);
	close(g1);
	close(c1);

	/* (ii) container with only the mdev group: nothing pinned at map time. */
	c2 = container_with(mdev_g, &g2);
	dev = ioctl(g2, VFIO_GROUP_GET_DEVICE_FD, uuid);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
	{
		struct vfio_device_info info = { .argsz = sizeof(info) };

		r = ioctl(dev, VFIO_DEVICE_GET_INFO, &info);
		printf("SELFTEST-INFO mdev GET_INFO r=%ld flags=%#x regions=%u irqs=%u\n",
		       r, info.flags, info.num_regions, info.num_irqs);
	}
	const uint64_t A = 0x10000000, H = 0x20000000, S = 0x30000000, P = 0x40000000;

	r = map_dma(c2, anon, A, SZ, &err);
	check("ii.mdev.map-anon", "ok", r, err);
	r = pin(dev, A, NPAGES(SZ), 1, &err);
	check("ii.mdev.pin-anon", "16", r, err);
	r = pinned(dev, &err);
	check("ii.mdev.pinned-after-pin", "16", r, err);
	memset(buf, 0, SZ);
	r = rw(dev, A, buf, SZ, 0, &err);
	check("ii.mdev.rw-read-anon", "ok", r, err);
	check("ii.mdev.rw-read-anon.pattern", "ok", memcmp(buf, anon, SZ) ? -1 : 0, EBADMSG);
	for (i = 0; i < 4096; i++)
		buf[i] = (uint8_t)~i;
	r = rw(dev, A + 4096, buf, 4096, 1, &err);
	check("ii.mdev.rw-write-anon", "ok", r, err);
	check("ii.mdev.rw-write-anon.seen-by-cpu", "ok", memcmp(buf, anon + 4096, 4096) ? -1 : 0, EBADMSG);

	r = map_dma(c2, hole, H, SZ, &err);
	check("ii.mdev.map-hole", "ok", r, err);
	r = pin(dev, H, NPAGES(SZ), 1, &err);
	check("ii.mdev.pin-hole", "EFAULT", r, err);
	r = rw(dev, H, buf, 64, 0, &err);
	check("ii.mdev.rw-read-hole", "*", r, err);

	/* Unmapping a pinned range: .dma_unmap must unpin it. */
	r = unmap_dma(c2, A, SZ, &err);
	check("ii.mdev.unmap-pinned-anon", exp, r, err);
	r = pinned(dev, &err);
	check("ii.mdev.pinned-after-unmap", "ok", r, err);

	/* The seed's path: vfio_pin_pages() on special PTEs (mdev, no IOMMU). */
	r = map_dma(c2, special, S, SZ, &err);
	check("ii.mdev.map-special", "ok", r, err);
	r = pin(dev, S, NPAGES(SZ), 1, &err);
	check("ii.mdev.pin-special", "EEXIST", r, err);
	r = pin(dev, S, 1, 0, &err);
	check("ii.mdev.pin-special-1page-read", "EEXIST", r, err);
	{
		uint32_t id = 0;

		r = rw(dev, S, &id, sizeof(id), 0, &err);
		check("ii.mdev.rw-read-special", "*", r, err);
		printf("SELFTEST-INFO special dword0=%#x\n", id);
	}

	r = map_dma(c2, page, P, SZ, &err);
	check("ii.mdev.map-page", "ok", r, err);
	r = pin(dev, P, NPAGES(SZ), 1, &err);
	check("ii.mdev.pin-page", "16", r, err);
	memset(buf, 0, SZ);
	r = rw(dev, P, buf, SZ, 0, &err);
	check("ii.mdev.rw-read-page", "ok", r, err);
	check("ii.mdev.rw-read-page.pattern", "ok", memcmp(buf, page, SZ) ? -1 : 0, EBADMSG);
	{
		struct vfio_exerciser_test_pin u = { .iova = P, .npages = NPAGES(SZ) };

		r = ioctl(dev, VFIO_EXERCISER_TEST_UNPIN, &u);
		check("ii.mdev.unpin-page", "16", r, errno);
		r = ioctl(dev, VFIO_EXERCISER_TEST_UNPIN, &u);
		check("ii.mdev.unpin-page-again", "ENOENT", r, errno);
	}
	r = pin(dev, P, VFIO_EXERCISER_TEST_PIN_MAX + 1, 0, &err);
	check("ii.mdev.pin-too-many", "E2BIG", r, err);
	r = pin(dev, P, 1, 0, &err);
	check("ii.mdev.pin-page-1", "1", r, err);
	close(dev); /* close_device unpins the rest */
	close(g2);
	close(c2);

	iommufd_part(uuid, anon, hole, special, buf, exp);

	printf("SELFTEST-SUMMARY %d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
