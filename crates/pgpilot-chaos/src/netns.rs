//! Network namespaces for the `partition` fault (not implemented yet).

/// The members' network namespaces and veth links.
pub struct Netns {}

impl Netns {
    /// Sets up the helper for `members` members.
    pub fn prepare(_members: usize) -> Result<Netns, String> {
        Err(unavailable_reason())
    }

    /// Takes member `i`'s link down.
    pub fn partition(&self, _i: usize) -> anyhow::Result<()> {
        anyhow::bail!("not implemented")
    }

    /// Brings member `i`'s link up again.
    pub fn heal(&self, _i: usize) -> anyhow::Result<()> {
        anyhow::bail!("not implemented")
    }
}

/// Why the partition fault can not run.
pub fn unavailable_reason() -> String {
    "network namespaces are not implemented yet".into()
}
