"""Everything that talks to hosts a user names: the guarded transport, audio_url downloads, webhooks."""
