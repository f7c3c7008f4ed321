"""Migration of virtual machines between libvirt hosts: cold (disks copied by the
transfer engine) and live (libvirt and QEMU, steered by our convergence policy)."""
