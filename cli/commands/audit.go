package commands

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/trustpool/trustpool/cli/internal/output"
	"github.com/trustpool/trustpool/internal/attestapi"
)

func (c *CLI) auditCommand() *cobra.Command {
	g := c.groupCommand("audit", "The audit log of administrative changes")
	g.AddCommand(c.auditList())
	return g
}

func (c *CLI) auditList() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List administrative changes and their outcome (denied ones too), newest first",
		Args:  cobra.NoArgs,
	}
	of := listFlags(cmd, true)
	cmd.Flags().IntVar(&limit, "limit", 0, fmt.Sprintf("at most this many records (1-%d; default %d)", attestapi.MaxLimit, attestapi.DefaultAuditLimit))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Flags().Changed("limit") && (limit < 1 || limit > attestapi.MaxLimit) {
			return usagef("--limit must be from 1 to %d", attestapi.MaxLimit)
		}
		cl, err := c.client(cmd.Context(), true)
		if err != nil {
			return err
		}
		recs, err := cl.Audit(cmd.Context(), limit)
		if err != nil {
			return err
		}
		l := output.List{Columns: []output.Column{{Name: "At"}, {Name: "Action"}, {Name: "Target"}, {Name: "Outcome"},
			{Name: "User ID"}, {Name: "Detail"}, {Name: "Project ID", Long: true}, {Name: "Request ID", Long: true}}}
		for _, r := range recs {
			l.Rows = append(l.Rows, []any{r.At, r.Action, r.Target, r.Outcome, r.UserID, r.Detail, r.ProjectID, r.RequestID})
		}
		return c.writeList(of, l)
	}
	return cmd
}
