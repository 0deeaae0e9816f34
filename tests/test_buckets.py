"""Shape buckets (r1jax.data.buckets), the response the rewards read (r1jax.data.prompts.whole_response)
and the Pallas kernels' ceil-division (pallas_kernels._common.cdiv), against examples."""

import jax.numpy as jnp
import pytest

from pallas_kernels._common import cdiv
from r1jax.data.buckets import pow2_bucket, round_up
from r1jax.data.prompts import whole_response


def test_pow2_bucket_is_the_smallest_minimum_times_a_power_of_two():
    assert [pow2_bucket(n, 1) for n in (0, 1, 2, 3, 5, 8, 9)] == [1, 1, 2, 4, 8, 8, 16]
    assert [pow2_bucket(n, 16) for n in (1, 16, 17, 33, 100)] == [16, 16, 32, 64, 128]
    assert pow2_bucket(9, 3) == 12  # minimum * 2^k, a power of two only when minimum is one
    with pytest.raises(ValueError, match="minimum"):
        pow2_bucket(5, 0)


def test_round_up_to_a_multiple():
    assert [round_up(n, 32) for n in (0, 1, 31, 32, 33, 64, 65)] == [0, 32, 32, 32, 64, 64, 96]
    assert round_up(130, 128) == 256 and round_up(7, 1) == 7
    with pytest.raises(ValueError, match="multiple"):
        round_up(5, 0)


def test_whole_response_opens_think_where_the_prompt_did():
    assert whole_response("2+2?<|Assistant|><think>\n", "steps</think> 4") == "<think>steps</think> 4"
    assert whole_response("User: 2+2? Assistant:", "<think>steps</think> 4") == "<think>steps</think> 4"


def test_pallas_cdiv_static_and_traced():
    assert [cdiv(n, 4) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]
    assert isinstance(cdiv(9, 4), int)
    assert int(cdiv(jnp.int32(9), 4)) == 3 and int(cdiv(jnp.int32(8), 4)) == 2
