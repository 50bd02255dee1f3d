"""wrk --latency output -> one TSV row: name conns per_req req_s records_s p50_ms p99_ms non2xx errors."""
import re
import sys

log, name, conns, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
text = open(log).read()


def ms(label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print("\t".join(map(str, [name, conns, per, f"{rps:.0f}", f"{rps * per:.0f}", f"{ms('50'):.2f}", f"{ms('99'):.2f}",
                         non2xx.group(1) if non2xx else 0, errors.group(1).strip() if errors else "none"])))
