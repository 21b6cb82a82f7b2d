"""The one data interface of pyrovae: a :class:`Split` of N data and its :class:`Batch` es.

A datum is one row of named fields. One field is the *observed* data (``"x"``
by default): it is passed to the model and the guide as their first argument
and scored by the model's observed site. Every other field is passed to both
programs as a keyword argument of the same name -- ``model(x, y=y)``,
``guide(x, y=y)`` -- so conditioning data (labels, covariates) travel with the
batch. Data of any shape ``[N, *event]`` work: images, flat vectors, tabular
rows, sequences.

**Optional fields.** A keyword field may be missing for part of the data (the
labels of semi-supervised learning): give its presence as a boolean mask,
``Split({"x": x, "y": y}, present={"y": mask})``. Batches then never mix data
with and without the field: each epoch the data with it and the data without
it are shuffled and cut into batches separately, and the batches of both
groups are interleaved in a random order; a batch without the field passes
``y=None`` (the usual Pyro convention for "latent here").

With few data in one group (100 labelled images among 50,000) that group is
one batch per epoch, and its gradient reaches the optimizer once every few
hundred steps. :meth:`Split.mixed_batch_indices` gives the minibatches of
Kingma et al. 2014 (arXiv 1406.5298) instead: every step holds a part of every
group, each part's mean loss weighted by its group's share ``N_g / N``, so that
the step's loss is an unbiased estimate of the mean loss over all N data; the
SVI step then sums the parts' weighted gradients (one pair call per part, as
the parts pass different keyword fields).

``labels`` are not passed to the pair: they colour pictures and carry the
ground-truth factors of a dataset (metrics); name them in the fields to
condition on them.
"""

from dataclasses import dataclass, field

import torch
import torch.utils.data

BINARIZE = (None, "static", "dynamic")


@dataclass
class Batch:
    """A batch: the observed data ``x`` and the keyword arguments of the pair."""

    x: torch.Tensor
    kwargs: dict = field(default_factory=dict)

    def to(self, device):
        return Batch(self.x.to(device), {k: None if v is None else v.to(device) for k, v in self.kwargs.items()})

    def __len__(self):
        return self.x.shape[0]

    def call(self, fn, **extra):
        """``fn(x, **kwargs, **extra)``."""
        return fn(self.x, **self.kwargs, **extra)


class Split:
    """N data with named fields; the observed field ``obs`` is binarized, scaled and checked.

    ``data``: a tensor ``[N, *event]`` (the observed field alone) or a dict of
    tensors with N rows each. A uint8 observed field is scaled to [0, 1].
    ``binarize``: ``None`` (values as they are), ``"static"`` (one Bernoulli
    draw per value made here, from ``seed``, as in Larochelle's binarized MNIST)
    or ``"dynamic"`` (a fresh draw each time a batch is made, as in the IWAE
    paper's protocol); both need values in [0, 1]. ``labels``: an optional
    tensor with N rows for pictures and metrics. ``present``: ``{field: bool
    mask [N]}`` for optional fields (module doc).
    """

    def __init__(self, data, labels=None, binarize=None, seed=0, obs="x", present=None):
        if binarize not in BINARIZE:
            raise ValueError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        fields = dict(data) if isinstance(data, dict) else {obs: data}
        if obs not in fields:
            raise ValueError(f"the observed field {obs!r} is not among the data's fields {sorted(fields)}")
        fields = {k: torch.as_tensor(v) for k, v in fields.items()}
        x = fields[obs]
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            x = x.float()
        check_data(x, obs, unit_interval=binarize is not None)
        if binarize == "static":
            x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
        fields[obs] = x
        n = x.shape[0]
        for name, value in fields.items():
            if value.dim() == 0 or value.shape[0] != n:
                raise ValueError(f"field {name!r} has {value.shape[0] if value.dim() else 0} rows but the observed "
                                 f"field {obs!r} has {n}")
        self.fields, self.obs, self.binarize = fields, obs, binarize
        self.labels = None if labels is None else torch.as_tensor(labels)
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} data: every datum needs one label row")
        self.present = {k: torch.as_tensor(v, dtype=torch.bool) for k, v in (present or {}).items()}
        for name, mask in self.present.items():
            if name not in fields or name == obs:
                raise ValueError(f"present names {name!r}, which is not a keyword field of the data "
                                 f"({sorted(set(fields) - {obs})})")
            if mask.shape != (n,):
                raise ValueError(f"present[{name!r}] must be a boolean mask of shape [{n}], got {list(mask.shape)}")

    def __len__(self):
        return self.data.shape[0]

    @property
    def data(self):
        """The observed field ``[N, *event]``."""
        return self.fields[self.obs]

    @property
    def event_shape(self):
        return tuple(self.data.shape[1:])

    @property
    def image_shape(self):
        """The event shape when the data are images ``[C, H, W]``, else None."""
        return self.event_shape if len(self.event_shape) == 3 else None

    @property
    def keywords(self):
        """The names of the keyword fields passed to the pair."""
        return [k for k in self.fields if k != self.obs]

    def batches(self, batch_size, generator=None, shuffle=False, device="cpu"):
        """Yield :class:`Batch` es; ``generator`` drives shuffling and dynamic binarization."""
        for index in self.batch_indices(batch_size, generator, shuffle):
            yield self.materialize(index, generator).to(device)

    def batch_indices(self, batch_size, generator=None, shuffle=False):
        """Row indices of each batch: one group per pattern of present optional fields (module doc)."""
        groups = self._groups()
        cuts = []
        for rows in groups:
            if shuffle:
                rows = rows[torch.randperm(len(rows), generator=generator)]
            cuts += [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
        if shuffle and len(groups) > 1:
            cuts = [cuts[i] for i in torch.randperm(len(cuts), generator=generator).tolist()]
        return cuts

    def mixed_batch_indices(self, batch_size, generator=None):
        """One epoch of steps that each take rows of every group: ``[[(rows, weight), ...] per step]``.

        The epoch has M = max(1, round(N / batch_size)) steps. A group of N_g >= M
        data is shuffled and cut into M parts (sizes differing by at most one: each
        datum once per epoch); a smaller group gives one datum per step, drawn from
        fresh shuffles of the group one after another (each datum M / N_g times per
        epoch, give or take one). ``weight`` = N_g / N: the sum over a step's parts of
        weight * (mean loss over the part's rows) estimates (1/N) sum_i loss_i without
        bias, whatever the group sizes (Kingma et al. 2014's minibatches hold N_l / M
        labelled and N_u / M unlabelled data). Without optional fields every step is
        one part of weight 1.
        """
        n = len(self)
        steps = max(1, round(n / batch_size))
        columns = []
        for rows in self._groups():
            if len(rows) >= steps:
                shuffled = rows[torch.randperm(len(rows), generator=generator)]
                parts = list(torch.tensor_split(shuffled, steps))
            else:
                passes = -(-steps // len(rows))
                cycled = torch.cat([rows[torch.randperm(len(rows), generator=generator)] for _ in range(passes)])
                parts = list(cycled[:steps].unsqueeze(1))
            columns.append([(part, len(rows) / n) for part in parts])
        return [list(step) for step in zip(*columns)]

    def _groups(self):
        n = len(self)
        if not self.present:
            return [torch.arange(n)]
        key = torch.zeros(n, dtype=torch.long)
        for i, mask in enumerate(self.present.values()):
            key |= mask.long() << i
        return [torch.nonzero(key == k).squeeze(1) for k in torch.unique(key, sorted=True).tolist()]

    def materialize(self, index, generator=None):
        """The :class:`Batch` of rows ``index`` (they must agree on which optional fields are present)."""
        x = self.data[index]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        kwargs = {}
        for name in self.keywords:
            mask = self.present.get(name)
            if mask is not None and not bool(mask[index].all()):
                if bool(mask[index].any()):
                    raise ValueError(f"a batch mixes data with and without field {name!r}")
                kwargs[name] = None
            else:
                kwargs[name] = self.fields[name][index]
        return Batch(x, kwargs)

    def fixed(self, seed=0):
        """This split with any dynamic binarization drawn once (for validation and test bounds)."""
        if self.binarize != "dynamic":
            return self
        return self._with(fields={**self.fields, self.obs: torch.bernoulli(
            self.data, generator=torch.Generator().manual_seed(seed))}, binarize=None)

    def subset(self, index):
        """The rows ``index`` (an int n: the first n) as a new split."""
        if isinstance(index, int):
            index = torch.arange(min(index, len(self)))
        return self._with(fields={k: v[index] for k, v in self.fields.items()},
                          labels=None if self.labels is None else self.labels[index],
                          present={k: v[index] for k, v in self.present.items()})

    def _with(self, **changes):
        out = object.__new__(Split)
        out.__dict__.update(self.__dict__)
        out.__dict__.update(changes)
        return out


def check_data(x, name="data", unit_interval=False):
    """Raise a ValueError naming the problem if ``x`` is not ``[N, *event]`` with N >= 1 of finite values."""
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one datum along dim 0, got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).sum().item()
        raise ValueError(f"{name} holds {bad} NaN or infinite values")
    if unit_interval:
        lo, hi = x.min().item(), x.max().item()
        if lo < 0 or hi > 1:
            raise ValueError(f"{name} values must lie in [0, 1] to be binarized, found range [{lo}, {hi}]")


def as_split(data, obs="x"):
    """Any data pyrovae takes, as a :class:`Split`: a Split as it is; a tensor; a dict of tensors;
    a torch ``Dataset`` or ``DataLoader`` whose items are such dicts, or tuples whose first element is
    the observed field (the rest are dropped; give a dict to pass them to the pair).

    A Dataset (a DataLoader's ``.dataset``) is read once into memory.
    """
    if isinstance(data, Split):
        return data
    if isinstance(data, (torch.Tensor, dict)):
        return Split(data, obs=obs)
    dataset = data.dataset if isinstance(data, torch.utils.data.DataLoader) else data
    if not isinstance(dataset, torch.utils.data.Dataset) or not hasattr(dataset, "__len__"):
        raise TypeError(f"data must be a tensor, a dict of tensors, a pyrovae Split or a torch Dataset/DataLoader, "
                        f"got {type(data).__name__}")
    items = [dataset[i] for i in range(len(dataset))]
    if not items:
        raise ValueError("the dataset is empty")
    if isinstance(items[0], dict):
        return Split({k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}, obs=obs)
    first = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
    return Split(torch.stack([torch.as_tensor(v) for v in first]), obs=obs)


@dataclass
class Dataset:
    """A dataset's train, validation and test splits."""

    name: str
    train: Split
    val: Split
    test: Split

    @property
    def event_shape(self):
        return self.train.event_shape

    @property
    def image_shape(self):
        return self.train.image_shape
