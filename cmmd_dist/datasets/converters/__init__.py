"""Converters from each paper dataset's original files to a DatasetBundle (then Parquet, see prepare).

One module per source family: ``mnist`` (digits2v, mnist2v from IDX or mnist.pkl.gz), ``svhn``
(mnist-svhn, mnist3 from SVHN .mat), ``text`` (mst: MNIST-SVHN-Text), ``xrmb`` (XRMB1/2.mat),
``flickr`` (MIR Flickr feature arrays). Every converter is seeded: the same source and seed give the
same arrays, hence byte-identical shards. ``CONVERTERS[name](source, seed, limit)`` returns a
:class:`Converted`: the dataset and the input files it read (hashed into the manifest). The dataset is an
in-memory bundle, except flickr's, whose source can be far bigger than memory: a stream of row blocks
read from the files (``array_rows``) as ``data prepare`` writes them. The others still load their source
whole (pickles, IDX and .mat files; at most a few GB).
"""

from __future__ import annotations

from cmmd_dist.datasets.converters.base import Converted, Converter, hash_inputs
from cmmd_dist.datasets.converters.flickr import FLICKR_SPEC, convert_flickr
from cmmd_dist.datasets.converters.mnist import convert_digits2v, convert_mnist2v
from cmmd_dist.datasets.converters.svhn import MNIST3_SPEC, MNIST_SVHN_SPEC, convert_mnist3, convert_mnist_svhn, read_svhn
from cmmd_dist.datasets.converters.text import MST_SPEC, convert_mst
from cmmd_dist.datasets.converters.xrmb import XRMB_SPEC, convert_xrmb
from cmmd_dist.datasets.loaders import DIGITS2V_SPEC, MNIST2V_SPEC

__all__ = ["Converted", "Converter", "CONVERTERS", "CONVERTER_SPECS", "hash_inputs", "read_svhn",
           "MNIST_SVHN_SPEC", "MNIST3_SPEC", "MST_SPEC", "XRMB_SPEC", "FLICKR_SPEC"]

CONVERTERS: dict[str, Converter] = {
    "digits2v": convert_digits2v,
    "mnist2v": convert_mnist2v,
    "mnist-svhn": convert_mnist_svhn,
    "mnist3": convert_mnist3,
    "mst": convert_mst,
    "xrmb": convert_xrmb,
    "flickr": convert_flickr,
}

CONVERTER_SPECS = {
    "digits2v": DIGITS2V_SPEC,
    "mnist2v": MNIST2V_SPEC,
    "mnist-svhn": MNIST_SVHN_SPEC,
    "mnist3": MNIST3_SPEC,
    "mst": MST_SPEC,
    "xrmb": XRMB_SPEC,
    "flickr": FLICKR_SPEC,
}
