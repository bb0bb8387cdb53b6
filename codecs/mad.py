"""IBA 13.4: the common MAD header and the management classes, methods and statuses.

Field names follow the kernel's ``struct ib_mad_hdr`` (include/rdma/ib_mad.h).
"""
from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Struct

# The classes, methods and sizes are defined in wire (no construct: the kernels import them there).
from madpipe.codecs.wire import (
    IB_MGMT_CLASS_BIS,
    IB_MGMT_CLASS_BM,
    IB_MGMT_CLASS_BOOT_MGMT,
    IB_MGMT_CLASS_CM,
    IB_MGMT_CLASS_CONG_MGMT,
    IB_MGMT_CLASS_DEVICE_ADM,
    IB_MGMT_CLASS_DEVICE_MGMT,
    IB_MGMT_CLASS_PERF_MGMT,
    IB_MGMT_CLASS_SNMP,
    IB_MGMT_CLASS_SUBN_ADM,
    IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE,
    IB_MGMT_CLASS_SUBN_LID_ROUTED,
    IB_MGMT_CLASS_VENDOR_RANGE1,
    IB_MGMT_CLASS_VENDOR_RANGE1_END,
    IB_MGMT_CLASS_VENDOR_RANGE2,
    IB_MGMT_CLASS_VENDOR_RANGE2_END,
    IB_MGMT_METHOD_DELETE,
    IB_MGMT_METHOD_GET,
    IB_MGMT_METHOD_GET_MULTI,
    IB_MGMT_METHOD_GET_RESP,
    IB_MGMT_METHOD_GET_TABLE,
    IB_MGMT_METHOD_GET_TABLE_RESP,
    IB_MGMT_METHOD_GET_TRACE_TABLE,
    IB_MGMT_METHOD_REPORT,
    IB_MGMT_METHOD_REPORT_RESP,
    IB_MGMT_METHOD_RESP,
    IB_MGMT_METHOD_SEND,
    IB_MGMT_METHOD_SET,
    IB_MGMT_METHOD_TRAP,
    IB_MGMT_METHOD_TRAP_REPRESS,
    IB_SMP_DIRECTION,
    MAD_HEADER_SIZE,
    MAD_SIZE,
)

__all__ = [
    "MADHeader", "MAD", "MGMT_CLASS_NAMES", "METHOD_NAMES", "MAD_STATUS_CODES",
    "mgmt_class_name", "method_name", "is_response", "status_text",
    "MAD_SIZE", "MAD_HEADER_SIZE", "IB_SMP_DIRECTION",
    "IB_MGMT_CLASS_SUBN_LID_ROUTED", "IB_MGMT_CLASS_SUBN_ADM", "IB_MGMT_CLASS_PERF_MGMT", "IB_MGMT_CLASS_BM",
    "IB_MGMT_CLASS_DEVICE_MGMT", "IB_MGMT_CLASS_CM", "IB_MGMT_CLASS_SNMP", "IB_MGMT_CLASS_VENDOR_RANGE1",
    "IB_MGMT_CLASS_VENDOR_RANGE1_END", "IB_MGMT_CLASS_DEVICE_ADM", "IB_MGMT_CLASS_BOOT_MGMT", "IB_MGMT_CLASS_BIS",
    "IB_MGMT_CLASS_CONG_MGMT", "IB_MGMT_CLASS_VENDOR_RANGE2", "IB_MGMT_CLASS_VENDOR_RANGE2_END",
    "IB_MGMT_CLASS_SUBN_DIRECTED_ROUTE",
    "IB_MGMT_METHOD_GET", "IB_MGMT_METHOD_SET", "IB_MGMT_METHOD_SEND", "IB_MGMT_METHOD_TRAP",
    "IB_MGMT_METHOD_REPORT", "IB_MGMT_METHOD_TRAP_REPRESS", "IB_MGMT_METHOD_GET_TABLE",
    "IB_MGMT_METHOD_GET_TRACE_TABLE", "IB_MGMT_METHOD_GET_MULTI", "IB_MGMT_METHOD_DELETE", "IB_MGMT_METHOD_RESP",
    "IB_MGMT_METHOD_GET_RESP", "IB_MGMT_METHOD_REPORT_RESP", "IB_MGMT_METHOD_GET_TABLE_RESP",
]

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
    if (IB_MGMT_CLASS_VENDOR_RANGE1 <= mgmt_class <= IB_MGMT_CLASS_VENDOR_RANGE1_END
            or IB_MGMT_CLASS_VENDOR_RANGE2 <= mgmt_class <= IB_MGMT_CLASS_VENDOR_RANGE2_END):
        return f"Vendor0x{mgmt_class:02x}"
    return f"Class0x{mgmt_class:02x}"


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


# Status field (IBA 13.4.7); an SMP's bit 15 is the direction (IB_SMP_DIRECTION).
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
