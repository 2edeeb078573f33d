// SPDX-License-Identifier: GPL-2.0
/*
 * Test module for vfio-exerciser: exposes two kernel paths to user space and
 * does nothing else.  The user API is in vfio_exerciser_test_uapi.h.
 *
 * 1. /dev/vfio_exerciser_test: mmap() gives a VM_MIXEDMAP vma.  Offset 0
 *    maps the MMIO pfns of a PCI BAR (no struct page) as special PTEs via
 *    vmf_insert_mixed(); offset one page maps pages the module allocates via
 *    vmf_insert_page().  PTEs are inserted by the fault handler, one page per
 *    fault (first touch, or GUP's fault-in).  VFIO_IOMMU_MAP_DMA of the first
 *    kind exercises follow_pfn_pte()/__get_user_pages() under FOLL_PIN: the
 *    path of the 2022 mdev breakage (7196040e19ad, 65462462ffb2).
 *
 * 2. An mdev parent, modelled on samples/vfio-mdev/mtty.c, whose one type
 *    creates an emulated-IOMMU vfio device with device ioctls that call
 *    vfio_pin_pages()/vfio_unpin_pages() and vfio_dma_rw() on IOVAs the user
 *    mapped into the container (or, with iommufd, the IOAS).
 *
 * Not for production kernels: any user who can open the misc device can map
 * the BAR it names.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/fs.h>
#include <linux/iommu.h>
#include <linux/list.h>
#include <linux/mdev.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/refcount.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <linux/vfio.h>
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 17, 0)
#include <linux/pfn_t.h>
#endif

#include "vfio_exerciser_test_uapi.h"

static char *special_bdf = "0000:00:04.0";
module_param(special_bdf, charp, 0444);
MODULE_PARM_DESC(special_bdf, "PCI device whose BAR backs mmap offset 0 (default 0000:00:04.0)");

static int special_bar;
module_param(special_bar, int, 0444);
MODULE_PARM_DESC(special_bar, "BAR index of special_bdf (default 0)");

static unsigned int max_mdevs = 8;
module_param(max_mdevs, uint, 0444);
MODULE_PARM_DESC(max_mdevs, "mdev instances that may exist at once (default 8)");

/*
 * Harness test hook: writing "oops" oopses with this module's parameter lock
 * held (sysfs takes it around ->set), so the next write waits forever: a kernel
 * that oopsed and stops making progress.
 */
static int vet_oops_set(const char *val, const struct kernel_param *kp)
{
	int *volatile p = NULL;

	if (!sysfs_streq(val, "oops"))
		return -EINVAL;
	pr_emerg("oopsing on request (oops parameter)\n");
	*p = 1;
	return 0;
}

static const struct kernel_param_ops vet_oops_ops = { .set = vet_oops_set };
module_param_cb(oops, &vet_oops_ops, NULL, 0200);
MODULE_PARM_DESC(oops, "Write \"oops\" to oops on purpose (harness tests)");

/* ------------------------------------------------------------------------ */
/* 1. The misc device and its VM_MIXEDMAP mappings                          */
/* ------------------------------------------------------------------------ */

enum vet_kind { VET_SPECIAL, VET_PAGE };

/* One per mmap() call, shared by the vmas it is split into. */
struct vet_map {
	refcount_t ref;
	enum vet_kind kind;
	unsigned long base_pgoff;	/* vm_pgoff at mmap() time */
	unsigned long npages;
	unsigned long pfn;		/* VET_SPECIAL: pfn of page 0 */
	struct page *pages[];		/* VET_PAGE */
};

static void vet_map_put(struct vet_map *map)
{
	unsigned long i;

	if (!refcount_dec_and_test(&map->ref))
		return;
	/* A page still pinned by vfio keeps its own references. */
	if (map->kind == VET_PAGE)
		for (i = 0; i < map->npages; i++)
			if (map->pages[i])
				__free_page(map->pages[i]);
	kvfree(map);
}

static void vet_vma_open(struct vm_area_struct *vma)
{
	struct vet_map *map = vma->vm_private_data;

	refcount_inc(&map->ref);
}

static void vet_vma_close(struct vm_area_struct *vma)
{
	vet_map_put(vma->vm_private_data);
}

static vm_fault_t vet_vma_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct vet_map *map = vma->vm_private_data;
	unsigned long i = vmf->pgoff - map->base_pgoff;

	if (vmf->pgoff < map->base_pgoff || i >= map->npages)
		return VM_FAULT_SIGBUS;
	if (map->kind == VET_PAGE)
		return vmf_insert_page(vma, vmf->address, map->pages[i]);
	/* No struct page behind the pfn: always a special PTE on x86. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 17, 0)
	return vmf_insert_mixed(vma, vmf->address,
				__pfn_to_pfn_t(map->pfn + i, PFN_DEV));
#else
	return vmf_insert_mixed(vma, vmf->address, map->pfn + i);
#endif
}

static const struct vm_operations_struct vet_vm_ops = {
	.open = vet_vma_open,
	.close = vet_vma_close,
	.fault = vet_vma_fault,
};

/* Physical range of special_bdf's BAR special_bar. */
static int vet_special_range(resource_size_t *start, resource_size_t *len)
{
	unsigned int dom, bus, slot, fn;
	struct pci_dev *pdev;
	int ret = 0;

	if (sscanf(special_bdf, "%x:%x:%x.%x", &dom, &bus, &slot, &fn) != 4 ||
	    special_bar < 0 || special_bar >= PCI_STD_NUM_BARS)
		return -EINVAL;
	pdev = pci_get_domain_bus_and_slot(dom, bus, PCI_DEVFN(slot, fn));
	if (!pdev)
		return -ENODEV;
	*start = pci_resource_start(pdev, special_bar);
	*len = pci_resource_len(pdev, special_bar);
	if (!(pci_resource_flags(pdev, special_bar) & IORESOURCE_MEM) ||
	    !*len || !PAGE_ALIGNED(*start))
		ret = -ENODEV;
	pci_dev_put(pdev);
	return ret;
}

static int vet_mmap(struct file *file, struct vm_area_struct *vma)
{
	unsigned long npages = vma_pages(vma), i;
	resource_size_t start, len;
	struct vet_map *map;
	int ret;

	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;

	switch (vma->vm_pgoff) {
	case VFIO_EXERCISER_TEST_PGOFF_SPECIAL:
		ret = vet_special_range(&start, &len);
		if (ret)
			return ret;
		if (npages > (len >> PAGE_SHIFT))
			return -EINVAL;
		map = kzalloc(sizeof(*map), GFP_KERNEL);
		if (!map)
			return -ENOMEM;
		map->kind = VET_SPECIAL;
		map->pfn = start >> PAGE_SHIFT;
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
		break;
	case VFIO_EXERCISER_TEST_PGOFF_PAGE:
		if (npages > (VFIO_EXERCISER_TEST_PAGE_MAX_BYTES >> PAGE_SHIFT))
			return -EINVAL;
		map = kvzalloc(struct_size(map, pages, npages), GFP_KERNEL);
		if (!map)
			return -ENOMEM;
		map->kind = VET_PAGE;
		map->npages = npages;
		refcount_set(&map->ref, 1);
		for (i = 0; i < npages; i++) {
			map->pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
			if (!map->pages[i]) {
				vet_map_put(map);
				return -ENOMEM;
			}
		}
		break;
	default:
		return -EINVAL;
	}
	refcount_set(&map->ref, 1);
	map->base_pgoff = vma->vm_pgoff;
	map->npages = npages;

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &vet_vm_ops;
	vma->vm_private_data = map;
	return 0;
}

static const struct file_operations vet_misc_fops = {
	.owner = THIS_MODULE,
	.mmap = vet_mmap,
};

static struct miscdevice vet_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "vfio_exerciser_test",
	.fops = &vet_misc_fops,
	.mode = 0600,
};

/* ------------------------------------------------------------------------ */
/* 2. The mdev parent and its vfio device                                   */
/* ------------------------------------------------------------------------ */

struct vet_pin {
	struct list_head node;
	u64 iova;
	int npages;
};

struct vet_mdev {
	struct vfio_device vdev;
	struct mutex lock;		/* pins, npinned */
	struct list_head pins;
	unsigned long npinned;
};

static struct vet_mdev *to_vet(struct vfio_device *vdev)
{
	return container_of(vdev, struct vet_mdev, vdev);
}

/* Called with m->lock held. */
static int vet_unpin_one(struct vet_mdev *m, struct vet_pin *pin)
{
	int n = pin->npages;

	vfio_unpin_pages(&m->vdev, pin->iova, n);
	m->npinned -= n;
	list_del(&pin->node);
	kfree(pin);
	return n;
}

static long vet_pin(struct vet_mdev *m, void __user *uarg)
{
	struct vfio_exerciser_test_pin p;
	struct page **pages;
	struct vet_pin *pin;
	int prot = IOMMU_READ;
	int ret;

	if (copy_from_user(&p, uarg, sizeof(p)))
		return -EFAULT;
	if (p.flags & ~VFIO_EXERCISER_TEST_PIN_WRITE)
		return -EINVAL;
	if (p.flags & VFIO_EXERCISER_TEST_PIN_WRITE)
		prot |= IOMMU_WRITE;
	/* vfio's own limit (VFIO_PIN_PAGES_MAX_ENTRIES); 0 goes to vfio. */
	if (p.npages > VFIO_EXERCISER_TEST_PIN_MAX)
		return -E2BIG;

	pages = kcalloc(max_t(u32, p.npages, 1), sizeof(*pages), GFP_KERNEL);
	pin = kzalloc(sizeof(*pin), GFP_KERNEL);
	if (!pages || !pin) {
		ret = -ENOMEM;
		goto out;
	}

	mutex_lock(&m->lock);
	ret = vfio_pin_pages(&m->vdev, p.iova, p.npages, prot, pages);
	if (ret > 0) {
		pin->iova = p.iova;
		pin->npages = ret;
		list_add_tail(&pin->node, &m->pins);
		m->npinned += ret;
		pin = NULL;
	}
	mutex_unlock(&m->lock);
out:
	kfree(pin);
	kfree(pages);
	return ret;
}

static long vet_unpin(struct vet_mdev *m, void __user *uarg)
{
	struct vfio_exerciser_test_pin p;
	struct vet_pin *pin, *tmp;
	long n = 0;

	if (copy_from_user(&p, uarg, sizeof(p)))
		return -EFAULT;
	if (p.flags)
		return -EINVAL;

	mutex_lock(&m->lock);
	list_for_each_entry_safe(pin, tmp, &m->pins, node) {
		if (p.npages && (pin->iova != p.iova || pin->npages != p.npages))
			continue;
		n += vet_unpin_one(m, pin);
		if (p.npages)
			break;
	}
	mutex_unlock(&m->lock);
	return (p.npages && !n) ? -ENOENT : n;
}

static long vet_rw(struct vet_mdev *m, void __user *uarg)
{
	struct vfio_exerciser_test_rw r;
	bool write;
	void *buf;
	int ret;

	if (copy_from_user(&r, uarg, sizeof(r)))
		return -EFAULT;
	if ((r.flags & ~VFIO_EXERCISER_TEST_RW_WRITE) || !r.len ||
	    r.len > VFIO_EXERCISER_TEST_RW_MAX)
		return -EINVAL;
	write = r.flags & VFIO_EXERCISER_TEST_RW_WRITE;

	buf = kvzalloc(r.len, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	if (write && copy_from_user(buf, u64_to_user_ptr(r.data), r.len)) {
		ret = -EFAULT;
		goto out;
	}
	ret = vfio_dma_rw(&m->vdev, r.iova, buf, r.len, write);
	if (!ret && !write && copy_to_user(u64_to_user_ptr(r.data), buf, r.len))
		ret = -EFAULT;
out:
	kvfree(buf);
	return ret;
}

static long vet_ioctl(struct vfio_device *vdev, unsigned int cmd,
		      unsigned long arg)
{
	struct vet_mdev *m = to_vet(vdev);
	void __user *uarg = (void __user *)arg;
	long ret;

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO: {
		unsigned long minsz = offsetofend(struct vfio_device_info, num_irqs);
		struct vfio_device_info info;

		if (copy_from_user(&info, uarg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		info.flags = 0;
		info.num_regions = 0;
		info.num_irqs = 0;
		return copy_to_user(uarg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_EXERCISER_TEST_PIN:
		return vet_pin(m, uarg);
	case VFIO_EXERCISER_TEST_UNPIN:
		return vet_unpin(m, uarg);
	case VFIO_EXERCISER_TEST_RW:
		return vet_rw(m, uarg);
	case VFIO_EXERCISER_TEST_PINNED:
		mutex_lock(&m->lock);
		ret = m->npinned;
		mutex_unlock(&m->lock);
		return ret;
	}
	return -ENOTTY;
}

/* Required of pinning drivers: the user unmapped [iova, iova + length). */
static void vet_dma_unmap(struct vfio_device *vdev, u64 iova, u64 length)
{
	struct vet_mdev *m = to_vet(vdev);
	struct vet_pin *pin, *tmp;

	mutex_lock(&m->lock);
	list_for_each_entry_safe(pin, tmp, &m->pins, node) {
		u64 end = pin->iova + ((u64)pin->npages << PAGE_SHIFT);

		if (pin->iova < iova + length && iova < end)
			vet_unpin_one(m, pin);
	}
	mutex_unlock(&m->lock);
}

static void vet_close_device(struct vfio_device *vdev)
{
	struct vet_mdev *m = to_vet(vdev);
	struct vet_pin *pin, *tmp;

	mutex_lock(&m->lock);
	list_for_each_entry_safe(pin, tmp, &m->pins, node)
		vet_unpin_one(m, pin);
	mutex_unlock(&m->lock);
}

static int vet_init_dev(struct vfio_device *vdev)
{
	struct vet_mdev *m = to_vet(vdev);

	mutex_init(&m->lock);
	INIT_LIST_HEAD(&m->pins);
	return 0;
}

static void vet_release_dev(struct vfio_device *vdev)
{
	mutex_destroy(&to_vet(vdev)->lock);
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
	vfio_free_device(vdev);
#endif
}

static const struct vfio_device_ops vet_vfio_ops = {
	.name = "vfio-exerciser-test",
	.init = vet_init_dev,
	.release = vet_release_dev,
	.close_device = vet_close_device,
	.ioctl = vet_ioctl,
	.dma_unmap = vet_dma_unmap,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
#endif
};

static int vet_mdev_probe(struct mdev_device *mdev)
{
	struct vet_mdev *m;
	int ret;

	m = vfio_alloc_device(vet_mdev, vdev, &mdev->dev, &vet_vfio_ops);
	if (IS_ERR(m))
		return PTR_ERR(m);
	ret = vfio_register_emulated_iommu_dev(&m->vdev);
	if (ret) {
		vfio_put_device(&m->vdev);
		return ret;
	}
	dev_set_drvdata(&mdev->dev, m);
	return 0;
}

static void vet_mdev_remove(struct mdev_device *mdev)
{
	struct vet_mdev *m = dev_get_drvdata(&mdev->dev);

	vfio_unregister_group_dev(&m->vdev);
	vfio_put_device(&m->vdev);
}

static struct mdev_driver vet_mdev_driver = {
	.device_api = VFIO_EXERCISER_TEST_DEVICE_API,
	.driver = {
		.name = "vfio_exerciser_test",
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
	.probe = vet_mdev_probe,
	.remove = vet_mdev_remove,
};

static struct mdev_type vet_type = {
	.sysfs_name = "pin",
	.pretty_name = "vfio-exerciser pin/dma_rw test device",
};

static struct mdev_type *vet_types[] = { &vet_type };

/* The parent: a class device as in mtty, so the type is "<class>-pin". */
static struct class vet_class = {
	.name = VFIO_EXERCISER_TEST_MDEV_PARENT,
};

static struct {
	struct device dev;
	struct mdev_parent parent;
} vet_parent;

static void vet_parent_release(struct device *dev)
{
}

static int __init vet_init(void)
{
	int ret;

	ret = misc_register(&vet_misc);
	if (ret)
		return ret;

	vet_mdev_driver.max_instances = max_mdevs;
	ret = mdev_register_driver(&vet_mdev_driver);
	if (ret)
		goto err_misc;
	ret = class_register(&vet_class);
	if (ret)
		goto err_driver;

	vet_parent.dev.class = &vet_class;
	vet_parent.dev.release = vet_parent_release;
	dev_set_name(&vet_parent.dev, "%s", VFIO_EXERCISER_TEST_MDEV_PARENT);
	ret = device_register(&vet_parent.dev);
	if (ret) {
		put_device(&vet_parent.dev);
		goto err_class;
	}

	ret = mdev_register_parent(&vet_parent.parent, &vet_parent.dev,
				   &vet_mdev_driver, vet_types,
				   ARRAY_SIZE(vet_types));
	if (ret)
		goto err_device;
	return 0;

err_device:
	device_unregister(&vet_parent.dev);
err_class:
	class_unregister(&vet_class);
err_driver:
	mdev_unregister_driver(&vet_mdev_driver);
err_misc:
	misc_deregister(&vet_misc);
	return ret;
}

static void __exit vet_exit(void)
{
	mdev_unregister_parent(&vet_parent.parent);
	device_unregister(&vet_parent.dev);
	class_unregister(&vet_class);
	mdev_unregister_driver(&vet_mdev_driver);
	misc_deregister(&vet_misc);
}

module_init(vet_init);
module_exit(vet_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vfio-exerciser test module: VM_MIXEDMAP special-PTE mmap and a pinning mdev");
