// edu-dma-test BDF — smoke test for vm-smoke.sh: DMA through VFIO type1
// and the guest's vIOMMU with QEMU's "edu" device.
// Maps two pages at IOVA 0x100000000, lets edu copy 2 KiB of page 0 into
// its internal buffer and back into page 1, and compares. Prints "DMA OK <bdf>"
// on success, "DMA FAIL <bdf>: <reason>" and exit 1 otherwise.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const char *bdf;
#define FAIL(...) do { printf("DMA FAIL %s: ", bdf); printf(__VA_ARGS__); \
    printf(" (errno %d %s)\n", errno, strerror(errno)); exit(1); } while (0)

#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_BUF 0x40000
#define IOVA 0x100000000ull
// QEMU 7.2's edu range check is off by one: a transfer that ends exactly at
// the end of its 4 KiB buffer (0x41000) is a hw_error that aborts QEMU.
#define LEN 2048

static volatile uint8_t *bar;
static void w64(unsigned off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }
static uint64_t r64(unsigned off) { return *(volatile uint64_t *)(bar + off); }

static void dma(uint64_t src, uint64_t dst, uint64_t cnt, uint64_t cmd) {
    w64(EDU_DMA_SRC, src);
    w64(EDU_DMA_DST, dst);
    w64(EDU_DMA_CNT, cnt);
    w64(EDU_DMA_CMD, cmd | 1);
    for (int i = 0; i < 1000 && (r64(EDU_DMA_CMD) & 1); i++) usleep(10000);
    if (r64(EDU_DMA_CMD) & 1) FAIL("DMA did not finish in 10 s");
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: edu-dma-test BDF\n"); return 2; }
    bdf = argv[1];
    char path[256], link[256];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0) FAIL("readlink %s", path);
    link[n] = 0;
    char *g = strrchr(link, '/') + 1;

    int container = open("/dev/vfio/vfio", O_RDWR);
    if (container < 0) FAIL("open /dev/vfio/vfio");
    if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) FAIL("API version");
    if (!ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)) FAIL("no TYPE1v2");
    snprintf(path, sizeof path, "/dev/vfio/%s", g);
    int group = open(path, O_RDWR);
    if (group < 0) FAIL("open %s", path);
    struct vfio_group_status st = {.argsz = sizeof st};
    if (ioctl(group, VFIO_GROUP_GET_STATUS, &st) || !(st.flags & VFIO_GROUP_FLAGS_VIABLE))
        FAIL("group %s not viable", g);
    if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) FAIL("SET_CONTAINER");
    if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) FAIL("SET_IOMMU");

    size_t len = 2 * 4096;
    uint8_t *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) FAIL("mmap buffer");
    srand(time(NULL));
    for (int i = 0; i < 4096; i++) buf[i] = rand(), buf[4096 + i] = 0;
    struct vfio_iommu_type1_dma_map map = {
        .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
        .vaddr = (uintptr_t)buf, .iova = IOVA, .size = len};
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map)) FAIL("MAP_DMA");

    int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
    if (dev < 0) FAIL("GET_DEVICE_FD");
    struct vfio_region_info cfg = {.argsz = sizeof cfg, .index = VFIO_PCI_CONFIG_REGION_INDEX};
    struct vfio_region_info b0 = {.argsz = sizeof b0, .index = VFIO_PCI_BAR0_REGION_INDEX};
    if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg) || ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &b0))
        FAIL("GET_REGION_INFO");
    uint16_t cmd;
    if (pread(dev, &cmd, 2, cfg.offset + 4) != 2) FAIL("read PCI command");
    cmd |= 0x6; // memory space + bus master
    if (pwrite(dev, &cmd, 2, cfg.offset + 4) != 2) FAIL("write PCI command");
    bar = mmap(NULL, b0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, b0.offset);
    if (bar == MAP_FAILED) FAIL("mmap BAR0");
    uint32_t id = *(volatile uint32_t *)bar;
    if ((id & 0xff) != 0xed) FAIL("BAR0 id 0x%x is not edu", id);

    dma(IOVA, EDU_BUF, LEN, 0);            // RAM -> device
    dma(EDU_BUF, IOVA + 4096, LEN, 2);     // device -> RAM
    if (memcmp(buf, buf + 4096, LEN)) FAIL("data mismatch after round trip");

    struct vfio_iommu_type1_dma_unmap unmap = {.argsz = sizeof unmap, .iova = IOVA, .size = len};
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap)) FAIL("UNMAP_DMA");
    printf("DMA OK %s group=%s iova=0x%llx\n", bdf, g, IOVA);
    return 0;
}
