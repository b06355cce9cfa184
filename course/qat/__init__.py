"""Old home of :mod:`course.methods.qat`, kept only for ``course.qat.layers``, which the
autograder's adversarial tests import inside a student answer. Use
:mod:`course.methods.qat`."""
