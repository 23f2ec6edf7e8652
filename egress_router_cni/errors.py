"""CNI error codes and the exceptions that carry them to the protocol layer."""

from __future__ import annotations


class ErrorCode:
    """Spec codes (SPEC.md "Error codes") plus this plugin's own, from 100 up.

    Plain ints, not an IntEnum: enum (with functools, collections, operator...)
    costs milliseconds of every plugin exec, and the codes are only ever
    compared and printed as numbers.
    """

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_CONFIG = 7
    INVALID_NETNS = 8
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    NOT_AVAILABLE_LIMITED = 51
    # Plugin-specific: the kernel or netfilter refused a change.
    LINK_FAILURE = 100
    ADDRESS_OR_ROUTE_FAILURE = 101
    SYSCTL_FAILURE = 102
    NAT_FAILURE = 103
    INTERFACE_EXISTS = 104
    CHECK_FAILED = 105
    # The node policy (/etc/egress-router/policy.json) forbids the config, or the policy file itself is refused.
    POLICY_VIOLATION = 106
    INTERNAL = 999


class CniError(Exception):
    """An error the protocol layer prints as CNI error JSON; subclasses fix the code."""

    code: int = ErrorCode.INTERNAL
    # The config's cniVersion, when known by the time the error is raised (for the error JSON).
    cni_version: str | None = None

    def __init__(self, msg: str, details: str = "", code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class IncompatibleVersion(CniError):
    code = ErrorCode.INCOMPATIBLE_VERSION


class UnsupportedField(CniError):
    code = ErrorCode.UNSUPPORTED_FIELD


class UnknownContainer(CniError):
    code = ErrorCode.UNKNOWN_CONTAINER


class InvalidEnvironment(CniError):
    code = ErrorCode.INVALID_ENVIRONMENT


class IOFailure(CniError):
    code = ErrorCode.IO_FAILURE


class DecodingFailure(CniError):
    code = ErrorCode.DECODING_FAILURE


class InvalidConfig(CniError):
    code = ErrorCode.INVALID_CONFIG


class InvalidNetns(CniError):
    code = ErrorCode.INVALID_NETNS


class NotAvailable(CniError):
    code = ErrorCode.NOT_AVAILABLE


class LinkError(CniError):
    code = ErrorCode.LINK_FAILURE


class InterfaceExists(CniError):
    code = ErrorCode.INTERFACE_EXISTS


class RouteError(CniError):
    code = ErrorCode.ADDRESS_OR_ROUTE_FAILURE


class SysctlError(CniError):
    code = ErrorCode.SYSCTL_FAILURE


class NatError(CniError):
    code = ErrorCode.NAT_FAILURE


class CheckFailed(CniError):
    code = ErrorCode.CHECK_FAILED


class PolicyViolation(CniError):
    code = ErrorCode.POLICY_VIOLATION
