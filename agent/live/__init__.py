"""The agent as the main program of its live medium (`p2v-agent live`).

Options come from the kernel command line, the network is brought up, the secret is
taken from where the operator put it (or made), the disks are served and a screen on
every console says how to reach them.
"""
