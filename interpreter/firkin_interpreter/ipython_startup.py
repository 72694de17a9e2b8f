"""Run once inside every Python kernel at start (`IPKernelApp.exec_files`), never imported by the
server. It adds the display formatters behind the rich fields of the SDK's `Result`:

- `e2b/data` (-> `result.data`): a pandas DataFrame as `{column: [values...]}`, timestamps as
  ISO strings and NaN as null;
- `e2b/chart` (-> `result.chart`): a matplotlib Figure described by E2B's own extractor, the
  `e2b-charts` package from PyPI (`chart_figure_to_dict`), when it is installed;
- `application/json` (-> `result.json`): dicts and lists as JSON (numpy values converted, keys
  made strings), where IPython would only give `text/plain`.

Each formatter first looks in `sys.modules`, so an output never imports pandas or matplotlib:
a DataFrame or Figure can only exist once the user's code imported them. A formatter that fails
leaves its field out; the other representations are unaffected. Everything here lives inside
one function that deletes itself, so the user's namespace gains no names.
"""


def __firkin_install_formatters():
    import datetime
    import decimal
    import json
    import math
    import sys

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter, JSONFormatter
    from traitlets import ObjectName, Unicode

    def plain(value, strict):
        """JSON-ready copy of `value` (NaN/inf -> None); TypeError for what JSON cannot hold
        when `strict`, else its str()."""
        def default(o):
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                if isinstance(o, numpy.ndarray):
                    return o.tolist()
                if isinstance(o, numpy.generic):
                    return o.item()
            if isinstance(o, (datetime.datetime, datetime.date, datetime.time)):
                return o.isoformat()
            if isinstance(o, decimal.Decimal):
                return float(o)
            if isinstance(o, (set, frozenset, tuple)):
                return list(o)
            if strict:
                raise TypeError("not JSON: %s" % type(o).__name__)
            return str(o)

        text = json.dumps(value, default=default, allow_nan=True)
        return json.loads(text, parse_constant=lambda _c: None)

    def finite(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    class DataFrameData(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, str)

        def __call__(self, obj):
            pandas = sys.modules.get("pandas")
            if pandas is None or not isinstance(obj, pandas.DataFrame):
                return super().__call__(obj)
            try:
                columns = obj.to_dict(orient="list")
                out = {}
                for key, values in columns.items():
                    out[str(key)] = [v.isoformat() if isinstance(v, pandas.Timestamp) else finite(v)
                                     for v in values]
                return plain(out, strict=False)
            except Exception:
                return None

    class FigureChart(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict, str)

        def __call__(self, obj):
            if "matplotlib" not in sys.modules:
                return super().__call__(obj)
            from matplotlib.figure import Figure

            if not isinstance(obj, Figure):
                return super().__call__(obj)
            if not hasattr(Figure, "get_suptitle"):
                # matplotlib < 3.8 (bookworm has 3.6) lacks the getter the extractor uses for
                # a multi-axes figure's title; it is the same text, read from the attribute.
                def get_suptitle(fig):
                    text = getattr(fig, "_suptitle", None)
                    return text.get_text() if text is not None else ""

                Figure.get_suptitle = get_suptitle
            try:
                from e2b_charts import chart_figure_to_dict

                return plain(chart_figure_to_dict(obj), strict=False) or None  # {}: blank
            except Exception:
                return None

    class PlainJSON(JSONFormatter):
        def __call__(self, obj):
            if isinstance(obj, (dict, list)):
                try:
                    return plain(obj, strict=True)
                except (TypeError, ValueError, RecursionError):
                    pass
            return super().__call__(obj)

    shell = get_ipython()
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    formatters["e2b/data"] = DataFrameData(parent=shell.display_formatter)
    formatters["e2b/chart"] = FigureChart(parent=shell.display_formatter)
    formatters["application/json"] = PlainJSON(parent=shell.display_formatter)


try:
    __firkin_install_formatters()
finally:
    del __firkin_install_formatters
