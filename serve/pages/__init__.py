"""PLACEHOLDER (helper P2's branch): the pages for people, one router; P1's version replaces
this file at merge and includes `model_router` and `form_router` the same way."""

from __future__ import annotations

from fastapi import APIRouter

from serve.pages.form import form_router
from serve.pages.model import model_router

router = APIRouter()
router.include_router(model_router)
router.include_router(form_router)
