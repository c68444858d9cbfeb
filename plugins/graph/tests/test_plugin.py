import subprocess
import sys


def test_plugin_module_imports_no_torch():
    code = "import sys, panconv_graph.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_components_are_registered():
    import panconv

    names = set(panconv.list_components())
    assert {"graph.LightGCN", "graph.MF", "graph.NGCF", "graph.RecSysData", "graph.FullRanking",
            "graph.spmm_sym"} <= names


def test_create_model_by_name():
    import panconv

    model = panconv.create_model("graph.LightGCN", n_users=3, n_items=4, embed_dim=8)
    assert model.n_layers == 3 and model.embedding.weight.shape == (7, 8)
