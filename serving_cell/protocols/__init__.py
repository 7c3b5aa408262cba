"""Wire protocols the cell speaks; each module turns HTTP into ``Call`` and back."""
