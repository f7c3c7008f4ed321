"""Builds the agent ISO from Debian 12 packages, in three cached layers.

1. packages (packages.py): the live system's root, installed by mmdebstrap and
   pruned, with the kernel and the signed EFI boot chain. Cached by the hash of its
   recipe; built in about a minute, once.
2. agent (overlay.py): the agent's code and the live system's init. Seconds.
3. image (image.py): the hybrid BIOS/UEFI ISO made by xorriso from both, and the
   per-job ISO that adds a secret as a separate initramfs part. Seconds.
"""
