"""IBA 13.4: the common MAD header and the management classes, methods and statuses.

Field names follow the kernel's ``struct ib_mad_hdr`` (include/rdma/ib_mad.h).
"""
from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

MAD_SIZE = 256
MAD_HEADER_SIZE = 24

# Management classes (ib_mad.h IB_MGMT_CLASS_*)
IB_MGMT_CLASS_SUBN_LID_ROUTED = 0x01
IB_MGMT_CLASS_SUBN_ADM = 0x03
IB_MGMT_CLASS_PERF_MGMT = 0x04
IB_MGMT_CLASS_BM = 0x05
IB_MGMT_CLASS_DEVICE_MGMT = 0x06
IB_MGMT_CLASS_CM = 0x07
IB_MGMT_CLASS_SNMP = 0x08
IB_MGMT_CLASS_VENDOR_RANGE1 = 0x09
IB_MGMT_CLASS_VENDOR_RANGE1_END = 0x0F
IB_MGMT_CLASS_DEVICE_ADM = 0x10
IB_MGMT_CLASS_BOOT_MGMT = 0x11
IB_MGMT_CLASS_BIS = 0x12
IB_MGMT_CLASS_CONG_MGMT = 0x21
IB_MGMT_CLASS_VENDOR_RANGE2 = 0x30
IB_MGMT_CLASS_VENDOR_RANGE2_END = 0x4F
IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE = 0x81

MGMT_CLASS_NAMES = {
    0x01: "SubnMgmt",
    0x03: "SubnAdm",
    0x04: "PerfMgt",
    0x05: "BM",
    0x06: "DevMgt",
    0x07: "CM",
    0x08: "SNMP",
    0x10: "DevAdm",
    0x11: "BootMgt",
    0x12: "BIS",
    0x21: "CongMgt",
    0x81: "SubnMgmtDR",
}


def mgmt_class_name(mgmt_class: int) -> str:
    """Short name of a management class, 'Vendor0x0a' or 'Class0x..' when unnamed."""
    if mgmt_class in MGMT_CLASS_NAMES:
        return MGMT_CLASS_NAMES[mgmt_class]
    if 0x09 <= mgmt_class <= 0x0F or 0x30 <= mgmt_class <= 0x4F:
        return f"Vendor0x{mgmt_class:02x}"
    return f"Class0x{mgmt_class:02x}"


# Methods (ib_mad.h IB_MGMT_METHOD_*); bit 7 marks a response.
IB_MGMT_METHOD_GET = 0x01
IB_MGMT_METHOD_SET = 0x02
IB_MGMT_METHOD_SEND = 0x03
IB_MGMT_METHOD_TRAP = 0x05
IB_MGMT_METHOD_REPORT = 0x06
IB_MGMT_METHOD_TRAP_REPRESS = 0x07
IB_MGMT_METHOD_GET_TABLE = 0x12
IB_MGMT_METHOD_GET_TRACE_TABLE = 0x13
IB_MGMT_METHOD_GET_MULTI = 0x14
IB_MGMT_METHOD_DELETE = 0x15
IB_MGMT_METHOD_RESP = 0x80
IB_MGMT_METHOD_GET_RESP = 0x81
IB_MGMT_METHOD_REPORT_RESP = 0x86
IB_MGMT_METHOD_GET_TABLE_RESP = 0x92

METHOD_NAMES = {
    0x01: "Get",
    0x02: "Set",
    0x03: "Send",
    0x05: "Trap",
    0x06: "Report",
    0x07: "TrapRepress",
    0x12: "GetTable",
    0x13: "GetTraceTable",
    0x14: "GetMulti",
    0x15: "Delete",
    0x81: "GetResp",
    0x86: "ReportResp",
    0x92: "GetTableResp",
    0x94: "GetMultiResp",
    0x95: "DeleteResp",
}


def method_name(method: int) -> str:
    return METHOD_NAMES.get(method, f"Method0x{method:02x}")


def is_response(method: int) -> bool:
    return bool(method & IB_MGMT_METHOD_RESP)


# Status field (IBA 13.4.7): bit 15 of an SMP's status is the directed-route D bit.
IB_SMP_DIRECTION = 0x8000
MAD_STATUS_CODES = {
    0x0000: "success",
    0x0001: "busy",
    0x0002: "redirect",
    0x0004: "bad version",
    0x0008: "method not supported",
    0x000C: "method/attribute not supported",
    0x001C: "invalid attribute or modifier",
}


def status_text(status: int) -> str:
    code = status & 0x7FFF
    if code == 0:
        return "ok"
    return MAD_STATUS_CODES.get(code & 0x1C, f"0x{code:04x}")


MADHeader = Struct(
    "base_version" / Int8ub,
    "mgmt_class" / Int8ub,
    "class_version" / Int8ub,
    "method" / Int8ub,
    "status" / Int16ub,
    "class_specific" / Int16ub,
    "tid" / Int64ub,
    "attr_id" / Int16ub,
    "resv" / Int16ub,
    "attr_mod" / Int32ub,
)
MADHeader.__doc__ = """IBA 13.4.3 common MAD header, 24 bytes (struct ib_mad_hdr)."""

MAD = Struct(
    "hdr" / MADHeader,
    "data" / Bytes(MAD_SIZE - MAD_HEADER_SIZE),
)
MAD.__doc__ = """IBA 13.4.2 a MAD of any class: the common header and 232 bytes of class data (struct ib_mad)."""
