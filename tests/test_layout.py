import chex
import numpy as np
import pytest

from mdnjax import layout, tasks


def _data(name="beta", n=50_000, seed=0):
    theta, y = tasks.from_name(name).simulate(np.random.default_rng(seed), n)
    return theta.astype(np.float32), y


@pytest.mark.parametrize("kind", ["padded", "packed"])
@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_every_sample_lands_in_exactly_one_bucket(kind, name):
    theta, y = _data(name)
    b = layout.bucket(theta, y) if kind == "padded" else layout.bucket_packed(theta, y)
    rows, width = b.theta.shape
    chex.assert_shape([b.theta, b.mask], (rows, width))
    chex.assert_shape(b.row_y, (rows,))
    chex.assert_shape([b.y_values, b.counts], (b.num_y,))
    assert b.theta.dtype == np.float32 and b.mask.dtype == bool

    values, counts = np.unique(y, return_counts=True)
    kept = counts >= 2
    np.testing.assert_array_equal(b.y_values, values[kept])
    np.testing.assert_array_equal(b.counts, counts[kept])
    for j, yv in enumerate(b.y_values):
        rows_j = b.row_y == j
        got = np.sort(b.theta[rows_j][b.mask[rows_j]])
        np.testing.assert_array_equal(got, np.sort(theta[y == yv]))
    assert b.mask.sum() == counts[kept].sum()
    # rows of one y are contiguous and y increases
    assert np.all(np.diff(b.row_y) >= 0)


def test_singletons_are_left_out_and_padding_is_in_range():
    theta = np.array([0.1, 0.2, 0.3, 0.9, 0.5, 0.6, 0.7], np.float32)
    y = np.array([1, 1, 1, 7, 2, 2, 2], np.int32)
    b = layout.bucket(theta, y)
    assert b.y_values.tolist() == [1, 2]
    assert b.theta.shape == (2, 3)
    p = layout.bucket(theta, y, width=2)
    assert p.theta.shape == (4, 2) and p.row_y.tolist() == [0, 0, 1, 1]
    pad = p.theta[~p.mask]
    assert np.all((pad > 0) & (pad < 1))


def test_too_few_samples_give_an_empty_layout():
    b = layout.bucket(np.array([0.1, 0.2], np.float32), np.array([0, 1]))
    assert b.num_y == 0


@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_packed_layout_is_within_ten_percent_of_n(name):
    theta, y = _data(name, n=1_000_000)
    padded = layout.bucket(theta, y)
    packed = layout.bucket_packed(theta, y)
    assert layout.layout_ratio(packed) <= 1.1
    assert layout.layout_ratio(padded) > 2.0  # why the packed layout exists


@pytest.mark.parametrize("name", ["beta", "gamma"])
def test_streamed_layout_holds_the_same_samples_as_the_in_memory_one(name):
    task = tasks.from_name(name)
    parts = [task.simulate(np.random.default_rng([7, i]), n) for i, n in enumerate([30_000, 30_000, 12_345])]
    streamed = layout.bucket_streamed(lambda: iter(parts))
    theta = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    ref = layout.bucket_packed(theta, y)
    assert streamed.theta.shape == ref.theta.shape
    np.testing.assert_array_equal(streamed.y_values, ref.y_values)
    np.testing.assert_array_equal(streamed.counts, ref.counts)
    np.testing.assert_array_equal(streamed.row_y, ref.row_y)
    np.testing.assert_array_equal(streamed.mask, ref.mask)
    np.testing.assert_array_equal(streamed.theta[streamed.mask], ref.theta[ref.mask])  # same order within each y
    pad = streamed.theta[~streamed.mask]
    assert np.all(np.isfinite(pad))
    assert layout.layout_ratio(streamed) <= 1.1


def test_row_counts_fill_rows_from_the_left():
    theta, y = _data("gamma", n=20_000)
    b = layout.bucket(theta, y, width=16)
    chex.assert_shape(b.row_count, (b.theta.shape[0],))
    np.testing.assert_array_equal(np.bincount(b.row_y, weights=b.row_count).astype(int), b.counts)
    assert np.all(b.row_count[:-1][np.diff(b.row_y) == 0] == 16)  # only a y's last row is partly filled
    assert np.all((b.row_count >= 1) & (b.row_count <= 16))


def test_layouts_are_aligned_for_in_place_device_transfer():
    theta, y = _data("beta", n=20_000)
    for b in (layout.bucket(theta, y), layout.bucket_packed(theta, y)):
        assert b.theta.ctypes.data % 64 == 0
    a = layout.aligned_empty((3, 5), np.float32)
    assert a.shape == (3, 5) and a.dtype == np.float32 and a.ctypes.data % 64 == 0


def test_streamed_layout_ends_with_the_spare_rows_asked_for():
    task = tasks.from_name("beta")
    parts = [task.simulate(np.random.default_rng([3, i]), 20_000) for i in range(2)]
    plain = layout.bucket_streamed(lambda: iter(parts))
    spare = layout.bucket_streamed(lambda: iter(parts), spare_rows=lambda rows, width: 5)
    rows = plain.theta.shape[0]
    assert spare.theta.shape == (rows + 5, plain.theta.shape[1])
    np.testing.assert_array_equal(spare.theta[:rows], plain.theta)
    np.testing.assert_array_equal(spare.row_count[rows:], 0)
    assert np.all(np.diff(spare.row_y) >= 0) and np.all(np.isfinite(spare.theta))
    assert spare.num_samples == plain.num_samples and layout.layout_ratio(spare) <= 1.1


# ----------------------------------------------------------------------------- vector observations


def _vector_y(seed=0, n=5000, m=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(-3, 3, size=(n, m))  # negative values, many repeated rows
    y[::7] = y[0]
    return y


def test_codebook_matches_a_dictionary_of_rows():
    y = _vector_y()
    book = layout.Codebook.of(y)
    reference = sorted({tuple(r) for r in y.tolist()})
    assert [tuple(r) for r in book.rows.tolist()] == reference
    index = {row: i for i, row in enumerate(reference)}
    np.testing.assert_array_equal(book.encode(y), [index[tuple(r)] for r in y.tolist()])
    assert book.encode(np.array([[9, 9, 9]])).tolist() == [-1]


def test_codebook_streams_across_chunks():
    y = _vector_y(1)
    chunks = lambda: iter([(None, y[i : i + 700]) for i in range(0, len(y), 700)])  # noqa: E731
    streamed = layout.Codebook.from_chunks(chunks)
    np.testing.assert_array_equal(streamed.rows, layout.Codebook.of(y).rows)
    np.testing.assert_array_equal(streamed.rows, np.unique(y, axis=0))


def test_vector_y_buckets_group_theta_like_a_dictionary():
    rng = np.random.default_rng(2)
    y = _vector_y(2, n=3000, m=2)
    theta = rng.normal(size=(3000, 2)).astype(np.float32)
    book = layout.Codebook.of(y)
    b = layout.bucket(theta, book.encode(y), width=16)
    groups = {}
    for t, r in zip(theta, y.tolist()):
        groups.setdefault(tuple(r), []).append(t)
    rows_of = {tuple(book.rows[j]): j for j in range(len(book))}
    for key, members in groups.items():
        if len(members) < 2:
            continue
        j = int(np.flatnonzero(b.y_values == rows_of[key])[0])
        got = np.concatenate([b.theta[r, : b.row_count[r]] for r in np.flatnonzero(b.row_y == j)])
        np.testing.assert_array_equal(got, np.asarray(members))  # same draws, in stream order
        np.testing.assert_array_equal(b.low[j], np.min(members, axis=0))


def test_index_of_finds_scalar_and_vector_observations():
    np.testing.assert_array_equal(layout.index_of(np.array([-2, 0, 5]), [5, -2, 1]), [2, 0, -1])
    rows = np.array([[-1, 0], [0, 5], [1, -3]])
    np.testing.assert_array_equal(layout.index_of(rows, np.array([[1, -3], [0, 0]])), [2, -1])


def test_codebook_build_gives_the_codes_of_its_rows():
    y = _vector_y(3)
    book, codes = layout.Codebook.build(y)
    np.testing.assert_array_equal(codes, book.encode(y))
    np.testing.assert_array_equal(book.rows[codes], y)
    assert layout.Codebook.of(np.zeros((0, 3), int)).rows.shape == (0, 3)
