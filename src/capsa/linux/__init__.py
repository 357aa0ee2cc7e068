"""The one way in to the kernel: small typed wrappers over libc via ctypes.

Nothing outside this package touches ctypes. Every function raises OSError
with the errno on failure and holds no policy.
"""
