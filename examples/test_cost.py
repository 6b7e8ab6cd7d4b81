"""What the checks cost: time Grad-CAM on the bundled model next to a bare forward pass of it.

``python -m pytest examples/test_cost.py --benchmark-json=cost.json`` records the ratio in ``extra_info``.
"""


def test_gradcam_cost(cam_benchmark, camcheck_model, camcheck_image):
    model = camcheck_model("camcheck-shapes")
    scene = camcheck_image("shapes-single-1000011")
    result = cam_benchmark(model, scene.image, None, method="gradcam", rounds=20)
    assert result.heatmap.shape == scene.size
    assert cam_benchmark.benchmark.extra_info["ratio_to_forward"] > 0
