//! Renders a `meta.k8s.io/v1 Table` as `kubectl get` prints it: upper-case headers, columns
//! padded to their widest cell with three spaces between them, `priority > 0` columns only when
//! wide, and a NAMESPACE column first for lists across namespaces.

use serde_json::Value;

pub fn render(table: &Value, wide: bool, with_namespace: bool) -> String {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_u64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_uppercase()))
        .collect();
    let mut header: Vec<String> = columns.iter().map(|(_, n)| n.clone()).collect();
    if with_namespace {
        header.insert(0, "NAMESPACE".into());
    }
    let mut rows: Vec<Vec<String>> = vec![header];
    for row in table["rows"].as_array().into_iter().flatten() {
        let mut cells: Vec<String> = columns
            .iter()
            .map(|(i, _)| match &row["cells"][*i] {
                Value::String(s) => s.clone(),
                Value::Null => "<none>".into(),
                other => other.to_string(),
            })
            .collect();
        if with_namespace {
            cells.insert(0, row["object"]["metadata"]["namespace"].as_str().unwrap_or("").to_string());
        }
        rows.push(cells);
    }
    if rows.len() == 1 {
        return String::new();
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (c, cell) in row.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_aligns_columns_and_hides_wide_ones() {
        let table = json!({"columnDefinitions": [
                {"name": "Name", "priority": 0}, {"name": "Status", "priority": 0}, {"name": "Node", "priority": 1}],
            "rows": [{"cells": ["nav", "Running", "hpc-1"], "object": {"metadata": {"namespace": "car"}}},
                     {"cells": ["telemetry", "Pending", null], "object": {"metadata": {"namespace": "car"}}}]});
        assert_eq!(render(&table, false, false), "NAME        STATUS\nnav         Running\ntelemetry   Pending\n");
        let wide = render(&table, true, true);
        assert!(wide.starts_with("NAMESPACE   NAME        STATUS    NODE\n"), "{wide}");
        assert!(wide.contains("<none>"));
        assert_eq!(render(&json!({"columnDefinitions": [], "rows": []}), false, false), "");
    }
}
