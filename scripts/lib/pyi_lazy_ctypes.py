"""Appended by build.spec to PyInstaller's own `pyimod03_ctypes` bootstrap module: its patch, applied lazily.

PyInstaller's bootstrap (loader/pyiboot01_bootstrap.py) calls
`pyimod03_ctypes.install()` on every exec. That install() imports `ctypes`
and replaces ctypes.CDLL/PyDLL (and cdll/pydll) with subclasses that look
for a library in sys._MEIPASS when the name given is not a file, and raise
PyInstallerImportError when it does not load. Importing `ctypes` costs about
2.8 ms of CPU per exec (docs/performance.md), and a CNI command never uses it:
netns.py calls setns(2) through `_ctypes`, only the iptables NAT backend
(python-iptables) imports ctypes.

build.spec compiles PyInstaller's module with this file appended, as the
bundle's `pyimod03_ctypes`. Everything above this file is PyInstaller's,
unchanged, so the patch is exactly theirs; this file only renames their
install() and replaces it with one that defers it: a meta-path finder waits
for the first `import ctypes`, lets the interpreter's own finders find and
load the package, and runs PyInstaller's install() right after, before the
importer gets the module. Code that imports ctypes sees the same patched
module as before, only later.

It runs inside the bootstrap, before the rest of the program: only builtins
and modules the bootstrap has loaded (sys) may be used here.
"""

import sys

_install_pyinstaller_patch = install  # noqa: F821  (PyInstaller's install(), defined above once appended)


class _PatchingLoader:
    """Wraps the loader the interpreter found for `ctypes`; patches the package once it has executed."""

    def __init__(self, loader, finder):
        self._loader = loader
        self._finder = finder

    def create_module(self, spec):
        """Let the real loader create the module (None: the default module object)."""
        return self._loader.create_module(spec)

    def exec_module(self, module):
        """Execute ctypes/__init__ with the real loader, then apply PyInstaller's patch."""
        # From here on the module looks as if no finder of ours had been involved.
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _install_pyinstaller_patch()  # `import ctypes` in there finds the module in sys.modules
        if self._finder in sys.meta_path:
            sys.meta_path.remove(self._finder)  # only after success: a failed import is patched on the retry


class _CtypesImportHook:
    """A meta-path finder that only answers for `ctypes`, with the spec of the finder that follows it."""

    def find_spec(self, fullname, path=None, target=None):
        """The spec the next finders give for ctypes, its loader wrapped; None for any other module."""
        if fullname != "ctypes":
            return None
        following = sys.meta_path[sys.meta_path.index(self) + 1 :] if self in sys.meta_path else []
        for finder in following:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(fullname, path, target) if find_spec is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, self)
                return spec
        return None  # not bundled: ModuleNotFoundError as before (PyInstaller's install() ignored that too)


def install():
    """Apply PyInstaller's ctypes patch when ctypes is first imported (now, if it is imported already)."""
    if "ctypes" in sys.modules:
        _install_pyinstaller_patch()
    else:
        sys.meta_path.insert(0, _CtypesImportHook())
