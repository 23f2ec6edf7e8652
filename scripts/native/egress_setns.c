/*
 * _egress_setns: setns(2) for Python < 3.12, which has no os.setns.
 *
 * The frozen build carries this module (scripts/build.sh compiles it,
 * build.spec bundles it) so that entering the pod's namespace does not load
 * _ctypes and libffi: about 0.4 ms of CPU on every ADD, CHECK and DEL.
 * egress_router_cni/netns.py falls back to _ctypes without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sched.h>

static PyObject *
egress_setns(PyObject *module, PyObject *args)
{
    int fd, nstype, rc;

    (void)module;
    if (!PyArg_ParseTuple(args, "ii:setns", &fd, &nstype)) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    rc = setns(fd, nstype);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"setns", egress_setns, METH_VARARGS,
     "setns(fd, nstype): move the calling thread into the namespace fd refers to (setns(2)); OSError on failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_egress_setns", "setns(2) for Python < 3.12 (egress-router's frozen build).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__egress_setns(void)
{
    return PyModule_Create(&module);
}
