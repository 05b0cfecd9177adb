# The compiled kernel (multipos/_native/group_kernels.c); see multipos.group_native.
def apply(
    x: int,
    y: int,
    double: bool,
    shape: tuple[int, ...],
    x_strides: tuple[int, ...],
    y_strides: tuple[int, ...],
    spec: int,
    sections: int,
    batch_offset: int,
    /,
) -> None: ...
