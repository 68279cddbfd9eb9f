"""Back-office staff: roles and what each may do, one-time sign-in links and console sessions."""
