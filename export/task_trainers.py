"""Imports the trainers of every task other than classification, so they register."""
