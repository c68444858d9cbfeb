"""What panconv-lenet registers: lazy "module:attr" strings, so listing imports no torch."""

from panconv import hookimpl


@hookimpl
def panconv_register_models(register):
    register("LeNet5", "panconv_lenet.models.lenet:LeNet5", kind="backbone", doc="LeNet-5 (LeCun et al. 1998)")


@hookimpl
def panconv_register_datasets(register):
    register("SmallMNIST", "panconv_lenet.datasets.mnist:SmallMNIST",
             doc="The first `limit` MNIST images of each split")
