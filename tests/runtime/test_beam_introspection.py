"""The memoised Beam DoFn introspection (webtext.runtime.beam.memoize_beam_introspection) answers as Beam's
own does, and stateful DoFns still run; local bundles sample their state often (sample_local_state_often)."""

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.typehints import decorators

from webtext.runtime import beam as webtext_beam# noqa: F401  (installs the memo)

TOTAL = userstate.ReadModifyWriteStateSpec("total", VarIntCoder())


class RunningTotal(beam.DoFn):
    def process(self, element, total=beam.DoFn.StateParam(TOTAL)):
        key, value = element
        now = (total.read() or 0) + value
        total.write(now)
        yield key, now


class Plain(beam.DoFn):
    def process(self, element):
        yield element


class Helper:
    def method(self, element, total=beam.DoFn.StateParam(TOTAL)):
        return element


def original_specs(dofn):
    return userstate.get_dofn_specs.original(dofn)  # Beam's own, which the memo wraps


def test_the_memo_is_installed():
    assert getattr(decorators.get_signature, "memoized", False)
    assert userstate.get_dofn_specs.__module__ == "webtext.runtime.beam"


def test_specs_equal_beams_own_for_stateful_plain_and_wrapped_dofns():
    for dofn in (RunningTotal(), Plain(), CallableWrapperDoFn(lambda x: x), CallableWrapperDoFn(len)):
        for _ in range(2):  # computed, then remembered
            assert userstate.get_dofn_specs(dofn) == original_specs(dofn)
    assert userstate.get_dofn_specs(RunningTotal()) == ({TOTAL}, set())
    assert userstate.is_stateful_dofn(RunningTotal()) and not userstate.is_stateful_dofn(Plain())


def test_a_bound_method_set_on_the_instance_is_seen():
    wrapped = Plain()
    assert userstate.get_dofn_specs(wrapped) == (set(), set())
    wrapped.extra = Helper().method  # a bound method with a state parameter, set on this instance only
    assert userstate.get_dofn_specs(wrapped) == ({TOTAL}, set()) == original_specs(wrapped)
    assert userstate.get_dofn_specs(Plain()) == (set(), set())


def test_signatures_of_bound_methods_drop_self():
    assert list(decorators.get_signature(Helper().method).parameters) == ["element", "total"]
    assert list(decorators.get_signature(Helper.method).parameters) == ["self", "element", "total"]


def test_a_stateful_dofn_still_runs():
    with beam.Pipeline() as p:
        out = (p | beam.Create([("a", 1), ("a", 2), ("b", 5)])
               | beam.ParDo(RunningTotal())
               | beam.CombinePerKey(max))
        assert_that(out, equal_to([("a", 3), ("b", 5)]))


def test_option_views_are_shared_windows_on_the_same_values():
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    options = PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=3"])
    view = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is view  # built once
    assert view.runner == "DirectRunner" and options.view_as(DirectOptions).direct_num_workers == 3
    view.streaming = True  # a value set through one view is seen through every other, as in Beam
    assert options.view_as(StandardOptions).streaming and options.get_all_options()["streaming"]
    fresh = PipelineOptions.view_as.original(options, StandardOptions)  # Beam's own view agrees
    assert fresh.runner == view.runner and fresh.streaming
    assert options.get_all_options() == PipelineOptions(
        ["--runner=DirectRunner", "--direct_num_workers=3", "--streaming"]).get_all_options()
    other = PipelineOptions(["--runner=DataflowRunner"])  # another options object gets its own views
    assert other.view_as(StandardOptions).runner == "DataflowRunner" and view.runner == "DirectRunner"


class SamplingPeriod(beam.DoFn):
    def process(self, element):
        from apache_beam.runners.worker import statesampler

        yield statesampler.get_current_tracker().sampling_period_ms


def test_local_bundles_sample_state_often_so_their_end_does_not_wait():
    import argparse

    from webtext.runtime.beam import LOCAL_STATE_SAMPLING_MS, add_runner_arguments, pipeline_options

    parser = argparse.ArgumentParser()
    add_runner_arguments(parser)
    with beam.Pipeline(options=pipeline_options(parser.parse_args([]), "test")) as p:
        # The sampler of the bundle that runs the DoFn: the one whose thread the bundle's end joins.
        assert_that(p | beam.Create([1]) | beam.ParDo(SamplingPeriod()), equal_to([LOCAL_STATE_SAMPLING_MS]))
