"""The kernel's USB periodic bookkeeping: how much bus time a stream is booked, and how much there is.

Pure arithmetic, no I/O and nothing of octobrix imported: the bandwidth advisor (what cameras will
reserve) and the uvcvideo status (what a payload cap leaves room for) both judge by these numbers,
so they live once, here.

- USB 2.0 spec 5.6.4: at most 80% of a high-speed microframe (125 µs, so 100 µs) and 90% of a
  full-speed frame (1 ms, so 900 µs) may be periodic; EHCI refuses a stream that would go past
  that (URB submission fails with -ENOSPC). xHCI keeps the same shares (drivers/usb/host/xhci.h:
  HS_BW_RESERVED 20, FS_BW_RESERVED 10, SS_BW_RESERVED 10 percent).
- USB 2.0 spec 5.6.3 and 5.9: a high-speed isochronous endpoint moves at most 3 x 1024 bytes per
  microframe ("high-bandwidth"); a full-speed one at most 1023 bytes per frame.
"""

from __future__ import annotations

HS_MICROFRAME_US = 125
HS_BUDGET_US = 100  # 80% of a microframe
FS_FRAME_US = 1000
FS_BUDGET_US = 900  # 90% of a frame
SS_INTERVAL_US = 125
SS_BUDGET_US = 112.5  # 90% of a bus interval
SS_NS_PER_BYTE = 2.0  # 5 Gbit/s, 10 bits on the wire per byte

HS_MAX_PAYLOAD = 3 * 1024  # per microframe, one high-bandwidth isochronous endpoint
FS_MAX_PAYLOAD = 1023  # per frame


def hs_isoc_bus_time_us(payload: int) -> int:
    """Microseconds the kernel books per microframe for a high-speed isochronous stream of payload bytes.

    The formula of HS_USECS_ISO in include/linux/usb/hcd.h: worst-case bit stuffing (7/6), the
    protocol overhead of an isochronous transaction, at 2083 ps per bit, rounded up.
    """
    bit_time = 7 * 8 * payload // 6
    nanoseconds = (38 * 8 * 2083 + 2083 * (3 + bit_time)) // 1000 + 5
    return -(-nanoseconds // 1000)


def fs_isoc_bus_time_us(payload: int) -> int:
    """usb_calc_bus_time(USB_SPEED_FULL, is_input=1, isoc=1, payload), in whole microseconds."""
    bit_time = 7 * 8 * payload // 6
    nanoseconds = 7268 + 1000 + (8354 * (31 + 10 * bit_time)) // 1000
    return -(-nanoseconds // 1000)


def ss_bus_time_us(payload: int) -> float:
    return payload * SS_NS_PER_BYTE / 1000


def streams_per_hs_bus(payload: int) -> int:
    """How many streams of payload bytes per microframe fit the periodic budget of one USB 2 bus."""
    return HS_BUDGET_US // hs_isoc_bus_time_us(payload)
