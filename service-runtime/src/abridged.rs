//! Long lists in messages and log lines: the first few items, and a count of the rest.

/// The first `shown` of `items`, each written by `show`, then `rest(n)` for the `n` left out,
/// if any.
pub fn first_and_rest<T>(
    items: &[T],
    shown: usize,
    show: impl Fn(&T) -> String,
    rest: impl Fn(usize) -> String,
) -> Vec<String> {
    let mut out: Vec<String> = items.iter().take(shown).map(show).collect();
    if items.len() > shown {
        out.push(rest(items.len() - shown));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::first_and_rest;

    #[test]
    fn the_first_and_a_count_of_the_rest() {
        let text =
            |n: usize| first_and_rest(&vec![7; n], 2, |i| i.to_string(), |r| format!("+{r}"));
        assert_eq!(text(1), ["7"]);
        assert_eq!(text(2), ["7", "7"]);
        assert_eq!(text(5), ["7", "7", "+3"]);
    }
}
