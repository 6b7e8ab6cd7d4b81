"""A torchvision model with ImageNet weights on a real photo. It runs where the weights are in the torch cache
or in --camcheck-weights-dir (CAMCHECK_WEIGHTS_DIR), and is skipped with the file name and how to provide it
where they are not and cannot be downloaded."""


def test_resnet50_looks_at_the_cat(camcheck, camcheck_model, camcheck_image):
    model = camcheck_model("resnet50")
    photo = camcheck_image("chelsea")
    result = camcheck.attends_to(model, photo.image, "tabby", photo.regions["cat"])
    assert result.label == "tabby"

