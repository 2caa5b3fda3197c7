"""Near-dedup stage: MinHash LSH candidates, verification, connected components, one survivor per
component. Its steps, in order (steps.py), each a Ray step that writes where it is told:

    find_candidate_edges  parts -> (band, bucket key, node) rows -> shuffle on the bucket -> edges
                          from each bucket member to its representative                  (lsh.py)
    verify_edges          edges -> shuffle on an end (each edge once) -> shuffle on the part
                          (each text once per partition asking for it) -> shuffle on the
                          partition (true Jaccard) -> verified edges                 (verify.py)
    find_components       edges -> union-find in one task, or rounds of large-star/small-star over Ray Data
                          above dedup.near.components_task_edges -> (node, component)
                                                                                  (components.py)
    write_survivors       components -> shuffle on the part (id, source, bytes, signature) ->
                          shuffle on the member's node (each partition's best per component) ->
                          shuffle on the component (the best of those, cluster rows) -> shuffle
                          on the member's node (duplicate rows, kind near) -> per chunk the
                          lines removed                                           (survivors.py)

A node is a document's number in the run (nodes.py).
"""

from slimpipe.stages.near_dedup.steps import (
    SurvivorOutputs,
    find_candidate_edges,
    find_components,
    verify_edges,
    write_survivors,
)

__all__ = ["SurvivorOutputs", "find_candidate_edges", "find_components", "verify_edges", "write_survivors"]
